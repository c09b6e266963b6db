"""The editor and path params: missing files are problems on their node, paths under the graph's
folder are saved relative and keep naming the same file after "save as" elsewhere."""

from __future__ import annotations

import json

from PySide6.QtWidgets import QApplication


def _saved_weights(path) -> str:
    return json.loads(path.read_text())["nodes"][0]["params"]["weights"]


def test_missing_file_is_a_problem_and_paths_are_saved_relative(window, tmp_path):
    win = window
    project = tmp_path / "project"
    (project / "w").mkdir(parents=True)
    graph_file = project / "g.json"
    graph_file.write_text(json.dumps({"format": "heiti-graph", "version": 1, "nodes": [
        {"id": "p", "kind": "apptest.params", "params": {"weights": "w/missing.bin"}}], "edges": []}))
    assert win.files.open(graph_file)
    problems = win.doc.validate_now().for_node("p")
    assert [(p.field, p.message) for p in problems] == [("weights", f"file {project / 'w' / 'missing.bin'} does not exist")]

    chosen = project / "w" / "weights.bin"
    chosen.write_bytes(b"\0" * 8)
    win.scene.select_nodes(["p"])
    QApplication.processEvents()
    field = win.inspector.fields["weights"]
    field.chooser = lambda *a: str(chosen)  # the file dialog answers an absolute path
    field._choose()
    assert win.doc.graph.node("p").params["weights"] == str(chosen)
    assert win.doc.validate_now().ok
    assert win.files.save()
    assert _saved_weights(graph_file) == "w/weights.bin"  # under the graph's folder: relative

    elsewhere = tmp_path / "elsewhere" / "g.json"
    win.answers.save_path = str(elsewhere)
    assert win.files.save_as()
    assert _saved_weights(elsewhere) == str(chosen)  # outside it: absolute, still the same file
    assert win.doc.validate_now().ok
