"""The bundled example graphs open in the editor with the real node kinds, and look right."""

from __future__ import annotations

from pathlib import Path

import pytest
from heiti.engine.registry import default_registry
from PySide6.QtCore import QPointF, QSettings
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.app.conftest import save_screenshot

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "resources" / "graphs").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_opens_with_every_node_and_wire_drawn(qtbot, tmp_path, path):
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme

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


def test_wire_drag_and_quick_add_screenshots(qtbot, tmp_path):
    """While a wire is dragged from an ONNX output, only ports that take ONNX light up."""
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme

    apply_theme(QApplication.instance())
    win = MainWindow(default_registry(), settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     recovery_dir=tmp_path / "recovery")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    d = win.doc
    data = d.add_node("dataset.digits", (0, 0))
    model = d.add_node("model.torch_cnn", (260, 0))
    export = d.add_node("convert.torch_to_onnx", (520, 0))
    tvm = d.add_node("compile.tvm", (800, -60))
    tfl = d.add_node("convert.keras_to_tflite", (800, 120))
    ort = d.add_node("runtime.onnxruntime", (800, 260))
    d.connect((data, "dataset"), (model, "dataset")) if "dataset" in win.scene.nodes[model].inputs else None
    d.connect((model, "model"), (export, "model"))
    win.view.fit_all()
    QApplication.processEvents()
    start = win.scene.port_item((export, "model", "out"))
    win.scene.start_wire(start)
    win.scene.drag_wire_to(start.scenePos() + QPointF(120, 60))
    assert win.scene.port_item((tvm, "model", "in")).highlight is True
    assert win.scene.port_item((tfl, "model", "in")).highlight is False  # wants keras
    assert win.scene.port_item((ort, "model", "in")).highlight is True
    QApplication.processEvents()
    save_screenshot(win, "editor-wire-drag.png")
    win.scene.cancel_wire()
    win.open_quick_add(QPointF(300, 300))
    QTest.keyClicks(win.quick_add.search, "onx")
    QApplication.processEvents()
    save_screenshot(win.quick_add, "editor-quick-add.png")
    first = win.quick_add.list.item(0).text()
    assert "ONNX" in first
    win.quick_add.hide()
    d.undo_stack.setClean()  # no save prompt when the window closes
