"""The main window driven like a user: palette, mouse drags on ports, inspector, clipboard, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from heiti.app.canvas.view import KIND_MIME
from heiti.app.document import edge_key
from heiti.app.palette import KIND_ROLE
from heiti.app.recovery import Recovery
from heiti.engine.graph import Graph, load_graph
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent, QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.app.conftest import drag, port_pos, save_screenshot

ROOT = Path(__file__).resolve().parents[2]


def palette_item(win, kind: str):
    tree = win.palette.tree
    root = tree.invisibleRootItem()
    for i in range(root.childCount()):
        category = root.child(i)
        for j in range(category.childCount()):
            if category.child(j).data(0, KIND_ROLE) == kind:
                return category.child(j)
    raise AssertionError(kind)


def drop_from_palette(win, kind: str, scene_pos: QPointF) -> str:
    """What a drag from the palette delivers to the canvas: the palette's own mime data, dropped."""
    before = {n.id for n in win.doc.graph.nodes}
    mime = win.palette.tree.mimeData([palette_item(win, kind)])
    assert mime.hasFormat(KIND_MIME)
    pos = QPointF(win.view.mapFromScene(scene_pos))
    event = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.view.dropEvent(event)
    assert event.dropAction() == Qt.DropAction.CopyAction  # the palette keeps its entry
    (new,) = {n.id for n in win.doc.graph.nodes} - before
    return new


def test_build_by_hand_save_reload_equal(window, tmp_path):
    win = window
    src = drop_from_palette(win, "test.source", QPointF(100, 100))
    win.palette.tree.itemDoubleClicked.emit(palette_item(win, "test.add"), 0)
    add = win.scene.selected_node_ids()[0]
    win.doc.move_nodes({add: (win.doc.position(add), (400.0, 100.0))})
    QApplication.processEvents()
    drag(win.view, port_pos(win, src, "out", "out"), port_pos(win, add, "values", "in"))
    assert [edge_key(e) for e in win.doc.graph.edges] == [((src, "out"), (add, "values"))]
    assert win.scene.wires  # the scene followed the model
    assert win.doc.validate_now().ok
    assert win.isWindowModified()
    path = tmp_path / "built.json"
    win.answers.save_path = str(path)
    assert win.files.save_as()
    assert not win.isWindowModified()
    saved = load_graph(path)
    assert saved == win.doc.graph
    data = json.loads(path.read_text())
    assert data["format"] == "heiti-graph" and data["nodes"][0]["ui"]["pos"]
    assert win.files.open(path)
    assert win.doc.graph == saved and len(win.scene.nodes) == 2 and len(win.scene.wires) == 1
    assert str(path.resolve()) in win.files.recent()


def test_invalid_wire_is_refused_with_its_message(window):
    win = window
    model = win.doc.add_node("test.model", (0, 0))  # keras
    tvm = win.doc.add_node("test.tvm", (400, 0))
    QApplication.processEvents()
    drag(win.view, port_pos(win, model, "model", "out"), port_pos(win, tvm, "model", "in"))
    assert win.doc.graph.edges == []
    assert "accepts onnx, tflite, got keras" in win.last_refusal
    assert "Wire refused" in win.refusal_label.text() and "keras_to_onnx" in win.refusal_label.text()
    save_screenshot(win, "editor-refused-wire.png")


def test_compatible_ports_light_up_while_dragging(window):
    win = window
    model = win.doc.add_node("test.model", (0, 0), {"fmt": "onnx"})
    tvm = win.doc.add_node("test.tvm", (400, 0))
    conv = win.doc.add_node("test.keras_to_onnx", (400, 200))
    QApplication.processEvents()
    win.scene.start_wire(win.scene.port_item((model, "model", "out")))
    assert win.scene.port_item((tvm, "model", "in")).highlight is True
    assert win.scene.port_item((conv, "model", "in")).highlight is False  # wants keras
    win.scene.finish_wire(port_pos(win, tvm, "model", "in"))
    assert len(win.doc.graph.edges) == 1
    assert win.scene.port_item((conv, "model", "in")).highlight is None


def test_wire_dropped_on_empty_canvas_offers_only_compatible_kinds(window):
    win = window
    model = win.doc.add_node("test.model", (0, 0))  # keras
    QApplication.processEvents()
    drag(win.view, port_pos(win, model, "model", "out"), QPointF(420, 300))
    offered = [win.quick_add.list.item(i).data(KIND_ROLE) for i in range(win.quick_add.list.count())]
    assert win.quick_add.isVisible()
    assert set(offered) == {"test.keras_to_onnx", "test.pass"}
    QTest.keyClicks(win.quick_add.search, "kto")
    assert win.quick_add.list.item(0).data(KIND_ROLE) == "test.keras_to_onnx"
    win.quick_add.accept_current()
    assert len(win.doc.graph.nodes) == 2 and len(win.doc.graph.edges) == 1
    new = win.doc.graph.edges[0].dst[0]
    assert win.doc.graph.node(new).kind == "test.keras_to_onnx"
    win.doc.undo_stack.undo()  # node and wire are one step
    assert len(win.doc.graph.nodes) == 1 and not win.doc.graph.edges


def test_tab_opens_quick_add_with_fuzzy_search(window):
    win = window
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_Tab)
    assert win.quick_add.isVisible()
    QTest.keyClicks(win.quick_add.search, "slw")
    assert win.quick_add.list.item(0).data(KIND_ROLE) == "test.slow"
    QTest.keyClick(win.quick_add.search, Qt.Key.Key_Return)
    assert [n.kind for n in win.doc.graph.nodes] == ["test.slow"]


def test_undo_redo_through_the_edit_menu(window):
    win = window
    a = win.doc.add_node("test.source", (0, 0))
    b = win.doc.add_node("test.add", (300, 0))
    win.doc.connect((a, "out"), (b, "values"))
    full = win.doc.graph.to_json()
    win.scene.select_nodes([a])
    win.actions_by_name["delete"].trigger()
    assert not win.doc.graph.has_node(a) and not win.doc.graph.edges and a not in win.scene.nodes
    win.actions_by_name["undo"].trigger()
    assert win.doc.graph.to_json() == full and len(win.scene.wires) == 1
    win.actions_by_name["redo"].trigger()
    assert not win.doc.graph.has_node(a)
    for _ in range(4):
        win.actions_by_name["undo"].trigger()
    assert win.doc.graph.nodes == [] and win.scene.nodes == {}
    assert not win.isWindowModified()


def test_moving_a_node_with_the_mouse_is_one_undoable_snapped_step(window):
    win = window
    node = win.doc.add_node("test.source", (0, 0))
    QApplication.processEvents()
    item = win.scene.nodes[node]
    start = item.mapToScene(QPointF(60, 12))
    drag(win.view, start, start + QPointF(133, 47))
    x, y = win.doc.position(node)
    assert (x, y) != (0, 0) and x % 20 == 0 and y % 20 == 0
    win.doc.undo_stack.undo()
    assert win.doc.position(node) == (0, 0) and (item.x(), item.y()) == (0, 0)


def test_copy_paste_and_duplicate_keep_inner_wires(window):
    win = window
    a = win.doc.add_node("test.source", (0, 0))
    b = win.doc.add_node("test.add", (300, 0))
    c = win.doc.add_node("test.add", (600, 0))
    win.doc.connect((a, "out"), (b, "values"))
    win.doc.connect((b, "out"), (c, "values"))
    win.scene.select_nodes([a, b])
    assert win.copy()
    assert json.loads(QApplication.clipboard().text())["format"] == "heiti-graph"
    pasted = win.paste()
    assert len(pasted) == 2 and set(win.scene.selected_node_ids()) == set(pasted)
    keys = {edge_key(e) for e in win.doc.graph.edges}
    assert ((pasted[0], "out"), (pasted[1], "values")) in keys
    assert len(keys) == 3  # the wire to c was not copied
    dup = win.duplicate()
    assert len(dup) == 2 and ((dup[0], "out"), (dup[1], "values")) in {edge_key(e) for e in win.doc.graph.edges}
    win.actions_by_name["undo"].trigger()
    win.actions_by_name["undo"].trigger()
    assert {n.id for n in win.doc.graph.nodes} == {a, b, c}


def test_inspector_fields_follow_the_schema_and_validate_as_you_type(window, tmp_path):
    win = window
    node = win.doc.add_node("apptest.params", (0, 0))
    win.scene.select_nodes([node])
    QApplication.processEvents()  # new rows are shown by a queued call
    fields = win.inspector.fields
    assert {n: f.kind for n, f in fields.items()} == {
        "name": "string", "epochs": "integer", "rate": "number", "mode": "enum", "shuffle": "boolean",
        "weights": "path", "limit": "json"}
    assert (fields["epochs"].widget.minimum(), fields["epochs"].widget.maximum()) == (1, 50)
    QTest.keyClicks(fields["name"].line, "X")
    error = win.inspector.errors["name"]
    assert error.isVisibleTo(win.inspector) and "pattern" in error.text()
    assert "name" not in win.doc.graph.node(node).params  # invalid values are not committed
    QTest.keyClick(fields["name"].line, Qt.Key.Key_Backspace)
    QTest.keyClicks(fields["name"].line, "y")
    assert win.doc.graph.node(node).params["name"] == "nety" and not error.isVisibleTo(win.inspector)
    fields["epochs"].widget.setValue(7)
    fields["mode"].widget.setCurrentIndex(1)
    fields["shuffle"].widget.setChecked(False)
    chosen = tmp_path / "w.bin"
    win.inspector.file_chooser = lambda *a: str(chosen)
    fields["weights"].chooser = win.inspector.file_chooser
    fields["weights"]._choose()
    assert win.doc.graph.node(node).params == {"name": "nety", "epochs": 7, "mode": "exact", "shuffle": False,
                                               "weights": str(chosen)}
    win.doc.undo_stack.undo()
    assert "weights" not in win.doc.graph.node(node).params
    assert fields["weights"].line.text() == ""  # the inspector followed the undo
    save_screenshot(win, "editor-inspector.png")


def test_close_prompts_for_unsaved_changes(window, tmp_path):
    win = window
    win.doc.add_node("test.source", (0, 0))
    win.answers.save_changes = "cancel"
    assert not win.close()
    assert win.answers.asked == ["save_changes"]
    win.answers.save_changes = "save"
    win.answers.save_path = str(tmp_path / "kept.json")
    assert win.close()
    assert load_graph(tmp_path / "kept.json") == win.doc.graph


def test_autosave_and_crash_recovery(window, app_registry, tmp_path, qtbot):
    win = window
    win.doc.add_node("test.source", (20, 40))
    assert win.files.autosave()
    assert win.files.recovery.graph_path.exists()
    # a recovery file left by an editor process that died
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = Recovery(tmp_path / "recovery", pid=int(dead.stdout))
    lost = Graph(name="lost work")
    lost.add_node("test.add", "summer", ui={"pos": [100, 100]})
    crashed.save(lost, tmp_path / "lost.json")
    win.answers.save_changes = "discard"
    assert win.files.new()
    assert win.files.check_recovery()
    assert any(q.startswith("restore:") and "lost.json" in q for q in win.answers.asked)
    assert win.doc.graph == lost and win.doc.modified and "summer" in win.scene.nodes
    assert not crashed.graph_path.exists()  # offered once
    win.answers.save_changes = "discard"
    assert win.close()
    assert not win.files.recovery.graph_path.exists()  # a clean close leaves no recovery file


def test_recovery_declined_discards_the_file(window, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = Recovery(tmp_path / "recovery", pid=int(dead.stdout))
    crashed.save(Graph(name="old"), None)
    window.answers.restore = False
    assert not window.files.check_recovery()
    assert window.doc.graph.name == "untitled" and not crashed.graph_path.exists()


def test_examples_menu_lists_the_bundled_graphs(window):
    window.files.fill_examples_menu(window.examples_menu)
    names = [a.text() for a in window.examples_menu.actions()]
    bundled = sorted((ROOT / "resources" / "graphs").glob("*.json"))
    if bundled:
        assert names == [p.stem.replace("_", " ") for p in bundled]
    else:
        assert len(names) == 1 and not window.examples_menu.actions()[0].isEnabled()


def test_zoom_at_cursor_keeps_the_point_under_it(window):
    view = window.view
    window.doc.add_node("test.source", (0, 0))
    anchor = QPoint(200, 150)
    before = view.mapToScene(anchor)
    view.zoom_by(1.6, anchor)
    after = view.mapToScene(anchor)
    assert abs(before.x() - after.x()) < 2 and abs(before.y() - after.y()) < 2
    assert abs(view.zoom - 1.6) < 1e-6


def test_editor_starts_without_heavy_frameworks():
    code = (
        "import sys; from PySide6.QtWidgets import QApplication; app = QApplication([]);"
        "from heiti.engine.registry import default_registry; from heiti.app.mainwindow import MainWindow;"
        "w = MainWindow(default_registry()); w.show(); app.processEvents();"
        "print(sorted(m for m in ('tensorflow', 'torch', 'tvm', 'keras', 'onnxruntime') if m in sys.modules))"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".heiti"),
           "HEITI_RECOVERY_DIR": str(ROOT / ".heiti" / "recovery-test")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_palette_search_filters_kinds(window):
    window.palette.search.setText("keras onnx")
    assert window.palette.visible_kinds() == ["test.keras_to_onnx"]
    window.palette.search.setText("")
    assert len(window.palette.visible_kinds()) == len(window.registry.kinds())


def test_double_click_on_empty_canvas_opens_quick_add(window):
    win = window
    win.doc.add_node("test.source", (0, 0))
    QApplication.processEvents()
    empty = win.view.mapFromScene(QPointF(600, 400))
    QTest.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, empty)
    assert win.quick_add.isVisible() and win.quick_add.list.count() == len(win.registry.kinds())
    win.quick_add.hide()
    on_node = win.view.mapFromScene(win.scene.nodes["source"].sceneBoundingRect().center())
    QTest.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, on_node)
    assert not win.quick_add.isVisible()


def test_rubber_band_selects_the_nodes_inside(window):
    win = window
    a = win.doc.add_node("test.source", (0, 0))
    b = win.doc.add_node("test.add", (300, 0))
    far = win.doc.add_node("test.add", (300, 600))
    win.view.fit_rect(win.scene.itemsBoundingRect())
    QApplication.processEvents()
    drag(win.view, QPointF(-40, -40), QPointF(520, 120), steps=6)
    assert set(win.scene.selected_node_ids()) == {a, b} and far not in win.scene.selected_node_ids()


def test_entry_point_builds_the_window_with_the_file(qtbot, tmp_path, monkeypatch):
    import argparse

    from heiti.app.main import build_window
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    monkeypatch.setenv("HEITI_RECOVERY_DIR", str(tmp_path / "recovery"))
    graph = Graph(name="from the command line")
    graph.add_node("test.source", "s", ui={"pos": [0, 0]})
    path = tmp_path / "cli.json"
    graph.save(path)
    win = build_window(argparse.Namespace(graph=str(path)))
    qtbot.addWidget(win)
    assert win.isVisible() and win.doc.graph == graph and win.doc.path == path
    assert "test.source" not in win.registry  # the real registry, not the test kinds


def test_middle_button_drag_pans_the_view(window):
    view = window.view
    window.doc.add_node("test.source", (0, 0))
    QApplication.processEvents()
    viewport = view.viewport()
    p0, p1 = QPoint(300, 300), QPoint(380, 340)
    before = view.mapToScene(p0)
    QTest.mousePress(viewport, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, p0)
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(p1), viewport.mapToGlobal(QPointF(p1)), Qt.MouseButton.NoButton,
                       Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, move)
    QTest.mouseRelease(viewport, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, p1)
    after = view.mapToScene(p1)
    assert abs(after.x() - before.x()) < 2 and abs(after.y() - before.y()) < 2  # the content followed the mouse
    assert window.doc.graph.node("source").ui["pos"] == [0, 0]  # panning moved no node


def test_reset_buttons_and_context_menu_restore_defaults(window):
    win = window
    node = win.doc.add_node("apptest.params", (0, 0), {"epochs": 9, "mode": "exact"})
    win.scene.select_nodes([node])
    QApplication.processEvents()
    assert win.inspector.resets["epochs"].isVisibleTo(win.inspector)
    assert not win.inspector.resets["rate"].isVisibleTo(win.inspector)
    win.inspector.resets["epochs"].click()
    assert win.doc.graph.node(node).params == {"mode": "exact"}
    assert win.inspector.fields["epochs"].widget.value() == 5  # shows the default again
    win.reset_params(node)
    assert win.doc.graph.node(node).params == {}
    win.doc.undo_stack.undo()
    assert win.doc.graph.node(node).params == {"mode": "exact"}
    win._context_menu(win.view.mapFromScene(win.scene.nodes[node].sceneBoundingRect().center()))
    texts = [a.text() for a in win._last_menu.actions()]
    assert "Reset params to defaults" in texts and "De&lete" in texts
    win._last_menu.close()


def test_dropping_a_wire_on_a_node_body_uses_its_only_fitting_port(window):
    win = window
    model = win.doc.add_node("test.model", (0, 0), {"fmt": "onnx"})
    tvm = win.doc.add_node("test.tvm", (400, 0))
    src = win.doc.add_node("test.source", (0, 300))
    QApplication.processEvents()
    body = win.scene.nodes[tvm].mapToScene(QPointF(95, 12))  # the title, far from any port
    drag(win.view, port_pos(win, model, "model", "out"), body)
    assert [edge_key(e) for e in win.doc.graph.edges] == [((model, "model"), (tvm, "model"))]
    drag(win.view, port_pos(win, src, "out", "out"), body)
    assert "no port that fits" in win.last_refusal and len(win.doc.graph.edges) == 1


def test_a_wire_picked_up_from_its_input_moves_or_is_deleted(window):
    win = window
    model = win.doc.add_node("test.model", (0, 0), {"fmt": "onnx"})
    tvm = win.doc.add_node("test.tvm", (400, 0))
    tvm2 = win.doc.add_node("test.tvm", (400, 250))
    win.doc.connect((model, "model"), (tvm, "model"))
    QApplication.processEvents()
    drag(win.view, port_pos(win, tvm, "model", "in"), port_pos(win, tvm2, "model", "in"))
    assert [edge_key(e) for e in win.doc.graph.edges] == [((model, "model"), (tvm2, "model"))]
    assert all(w.isVisible() for w in win.scene.wires.values())
    win.doc.undo_stack.undo()  # one step puts it back
    assert [edge_key(e) for e in win.doc.graph.edges] == [((model, "model"), (tvm, "model"))]
    drag(win.view, port_pos(win, tvm, "model", "in"), QPointF(200, 500))
    assert win.doc.graph.edges == [] and not win.quick_add.isVisible()
    win.doc.undo_stack.undo()
    drag(win.view, port_pos(win, tvm, "model", "in"), port_pos(win, tvm, "model", "in"))  # dropped where it was
    assert len(win.doc.graph.edges) == 1 and all(w.isVisible() for w in win.scene.wires.values())


def test_graph_name_and_description_are_edited_in_the_inspector(window):
    win = window
    win.scene.clearSelection()
    QApplication.processEvents()
    QTest.keyClicks(win.inspector.name_edit, " v2")
    assert win.doc.graph.name == "untitled v2" and "untitled v2" in win.windowTitle()
    win.inspector.description_edit.setPlainText("compares runtimes")
    assert win.doc.graph.description == "compares runtimes"
    win.doc.undo_stack.undo()
    win.doc.undo_stack.undo()
    assert (win.doc.graph.name, win.doc.graph.description) == ("untitled", "")
    assert win.inspector.name_edit.text() == "untitled"  # the field followed the undo
    QApplication.processEvents()
    save_screenshot(win.inspector_dock, "inspector-graph-info.png")


def test_arrange_lays_out_columns_without_overlap_in_one_undo_step(window):
    win = window
    d = win.doc
    ids = [d.add_node("test.source", (0, 0)) for _ in range(3)]
    add = d.add_node("test.add", (0, 0))
    last = d.add_node("test.add", (0, 0))
    for node in ids:
        d.connect((node, "out"), (add, "values"))
    d.connect((add, "out"), (last, "values"))
    before = d.graph.to_json()
    win.actions_by_name["arrange"].trigger()
    xs = {n: d.position(n)[0] for n in [*ids, add, last]}
    assert xs[ids[0]] == xs[ids[1]] == xs[ids[2]] < xs[add] < xs[last]
    boxes = [item.sceneBoundingRect() for item in win.scene.nodes.values()]
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    d.undo_stack.undo()
    assert d.graph.to_json() == before


def test_status_bar_counts_the_problems(window):
    win = window
    tvm = win.doc.add_node("test.tvm", (0, 0))
    win.doc.validate_now()
    assert win.problems_label.text() == "⚠ 1 problem" and "not connected" in win.problems_label.toolTip()
    model = win.doc.add_node("test.model", (-300, 0), {"fmt": "onnx"})
    win.doc.connect((model, "model"), (tvm, "model"))
    win.doc.validate_now()
    assert win.problems_label.text() == "✓ valid"


def test_recent_files_menu_lists_opened_files_newest_first(window, tmp_path):
    paths = []
    for name in ("one", "two"):
        graph = Graph(name=name)
        path = tmp_path / f"{name}.json"
        graph.save(path)
        assert window.files.open(path)
        paths.append(path)
    paths[0].unlink()
    window.files.fill_recent_menu(window.recent_menu)
    actions = [a for a in window.recent_menu.actions() if not a.isSeparator()]
    assert [a.text() for a in actions[:2]] == ["two.json", "one.json"]
    assert actions[0].isEnabled() and not actions[1].isEnabled()  # a file that is gone cannot be opened
