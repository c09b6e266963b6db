"""Fixtures for the editor tests: a main window over the test node kinds, with every modal dialog
replaced by a recorded answer, settings and recovery files under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from heiti.engine.registry import Registry
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.app import appnodes

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def app_registry(registry: Registry) -> Registry:
    for cls in appnodes.ALL:
        registry.register(cls)
    return registry


class Answers:
    """What the fake dialogs answer, and what they were asked."""

    def __init__(self) -> None:
        self.save_changes = "discard"
        self.restore = True
        self.save_path: str | None = None
        self.open_path: str | None = None
        self.errors: list[tuple[str, str]] = []
        self.asked: list[str] = []


@pytest.fixture
def window(qtbot, app_registry: Registry, tmp_path: Path):
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme

    apply_theme(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(app_registry, settings=settings, recovery_dir=tmp_path / "recovery")
    answers = Answers()
    win.answers = answers

    def ask_save_changes() -> str:
        answers.asked.append("save_changes")
        return answers.save_changes

    def ask_restore(description: str) -> bool:
        answers.asked.append(f"restore: {description}")
        return answers.restore

    win.ask_save_changes = ask_save_changes
    win.ask_restore = ask_restore
    win.ask_save_path = lambda: answers.save_path
    win.ask_open_path = lambda: answers.open_path
    win.show_error = lambda title, text: answers.errors.append((title, text))
    win.runs.runs_dir = tmp_path / "runs"
    win.runs.cache_dir = tmp_path / "cache"
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.runs.running:
        win.runs.stop()
        win.runs.bridge.wait(10000)
    win.doc.undo_stack.setClean()


def drag(view, start: QPointF, end: QPointF, steps: int = 4) -> None:
    """Press at `start`, move in a few steps with the button held, release at `end` (scene points)."""
    viewport = view.viewport()
    p0, p1 = view.mapFromScene(start), view.mapFromScene(end)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p0)
    for i in range(1, steps + 1):
        pos = QPointF(p0 + (p1 - p0) * (i / steps))
        event = QMouseEvent(QEvent.Type.MouseMove, pos, viewport.mapToGlobal(pos), Qt.MouseButton.NoButton,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(viewport, event)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p1)


def port_pos(win, node_id: str, port: str, direction: str) -> QPointF:
    return win.scene.port_item((node_id, port, direction)).scenePos()


def save_screenshot(widget, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert widget.grab().save(str(path), "PNG")
    return path
