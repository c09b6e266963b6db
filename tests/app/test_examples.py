"""The bundled example graphs open in the editor with the real node kinds, and look right."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from engine.registry import default_registry

from .conftest import save_screenshot

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "resources" / "graphs").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_opens_with_every_node_and_wire_drawn(qtbot, tmp_path, path):
    from app.mainwindow import MainWindow
    from app.theme import apply_theme

    apply_theme(QApplication.instance())
    registry = default_registry()
    win = MainWindow(registry, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     recovery_dir=tmp_path / "recovery")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    assert win.files.open_example(path)
    graph = win.doc.graph
    assert set(win.scene.nodes) == {n.id for n in graph.nodes}
    assert len(win.scene.wires) == len(graph.edges)
    unknown = [n.kind for n in graph.nodes if n.kind not in registry]
    assert not unknown, f"kinds not installed: {unknown}"
    assert win.doc.path is None  # an example opens as an untitled copy
    win.scene.select_nodes([graph.nodes[min(2, len(graph.nodes) - 1)].id])
    win.view.fit_all()
    QApplication.processEvents()
    save_screenshot(win, f"example-{path.stem}.png")
