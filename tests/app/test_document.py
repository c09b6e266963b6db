"""The document model without a view: edits as undo commands, connection checks, fragments."""

from __future__ import annotations

import pytest
from heiti.app.document import GraphDocument, edge_key, place_unpositioned
from heiti.engine.graph import Graph, load_graph


@pytest.fixture
def doc(qapp, app_registry):
    return GraphDocument(app_registry)


def build(doc: GraphDocument) -> dict[str, str]:
    ids = {
        "src": doc.add_node("test.source", (0, 0)),
        "add": doc.add_node("test.add", (300, 0)),
        "model": doc.add_node("test.model", (0, 200), {"fmt": "onnx"}),
        "tvm": doc.add_node("test.tvm", (300, 200)),
    }
    assert doc.connect((ids["src"], "out"), (ids["add"], "values")) is None
    assert doc.connect((ids["model"], "model"), (ids["tvm"], "model")) is None
    doc.set_param(ids["src"], "value", 3.5)
    return ids


def test_every_edit_undoes_to_an_equal_graph_and_redoes(doc):
    snapshots = [doc.graph.to_json()]
    ids = build(doc)
    snapshots.append(doc.graph.to_json())
    doc.move_nodes({ids["add"]: ((300, 0), (420, 40))})
    doc.remove_items([ids["model"]], [])
    final = doc.graph.to_json()
    assert not doc.graph.has_node(ids["model"]) and len(doc.graph.edges) == 1
    while doc.undo_stack.canUndo():
        doc.undo_stack.undo()
    assert doc.graph.to_json() == snapshots[0]
    while doc.undo_stack.canRedo():
        doc.undo_stack.redo()
    assert doc.graph.to_json() == final
    doc.undo_stack.undo()  # the delete: node and its wire come back at their places
    doc.undo_stack.undo()  # the move
    assert doc.graph.to_json() == snapshots[1]


def test_connection_refusals_carry_the_reason(doc):
    ids = build(doc)
    keras = doc.add_node("test.model", (0, 400))  # default format keras
    tvm2 = doc.add_node("test.tvm", (300, 400))
    reason = doc.connect((keras, "model"), (tvm2, "model"))
    assert reason is not None and "accepts onnx, tflite, got keras" in reason
    assert "test.keras_to_onnx" in reason  # the engine's proposed converter chain
    reason = doc.connect((ids["src"], "out"), (tvm2, "model"))
    assert "gives a Value" in reason and "takes a ModelArtifact" in reason
    reason = doc.connect((ids["model"], "model"), (ids["tvm"], "model"))
    assert "connected already" in reason
    other = doc.add_node("test.model", (0, 600), {"fmt": "onnx"})
    assert "takes one wire" in doc.connect((other, "model"), (ids["tvm"], "model"))
    # a cycle: add -> pass-through is impossible by type, so build one with test.add
    add2 = doc.add_node("test.add", (600, 0))
    assert doc.connect((ids["add"], "out"), (add2, "values")) is None
    assert "cycle" in doc.connect((add2, "out"), (ids["add"], "values"))
    assert "itself" in doc.connect((add2, "out"), (add2, "values"))
    assert len(doc.graph.edges) == 3


def test_compatible_ports_and_kinds_follow_formats(doc):
    ids = build(doc)
    keras = doc.add_node("test.model", (0, 400))
    ports = doc.compatible_ports((keras, "model", "out"))
    assert ports == set() or all(p[2] == "in" for p in ports)
    assert (ids["tvm"], "model", "in") not in ports  # keras does not go into tvm
    kinds = {k for k, _ in doc.compatible_kinds((keras, "model", "out"))}
    assert "test.keras_to_onnx" in kinds and "test.pass" in kinds and "test.tvm" not in kinds
    assert "test.add" not in kinds  # takes Values, not models
    upstream = {k for k, _ in doc.compatible_kinds((ids["tvm"], "model", "in"))}
    assert "test.keras_to_onnx" in upstream and "test.source" not in upstream


def test_fragment_keeps_inner_wires_only_and_paste_renames(doc):
    ids = build(doc)
    extra = doc.add_node("test.add", (600, 0))
    doc.connect((ids["add"], "out"), (extra, "values"))
    part = doc.fragment([ids["src"], ids["add"]])
    assert [n.id for n in part.nodes] == [ids["src"], ids["add"]]
    assert [edge_key(e) for e in part.edges] == [((ids["src"], "out"), (ids["add"], "values"))]
    new_ids = doc.insert_fragment(Graph.model_validate_json(part.to_json()), (40, 40))
    assert len(new_ids) == 2 and not set(new_ids) & set(ids.values())
    assert ((new_ids[0], "out"), (new_ids[1], "values")) in {edge_key(e) for e in doc.graph.edges}
    assert doc.graph.node(new_ids[0]).params == {"value": 3.5}
    assert doc.position(new_ids[0]) == (40.0, 40.0)
    doc.undo_stack.undo()
    assert not any(doc.graph.has_node(n) for n in new_ids)


def test_save_open_round_trip_is_the_engines_format(doc, tmp_path):
    build(doc)
    path = tmp_path / "g.json"
    doc.save(path)
    assert not doc.modified
    assert load_graph(path) == doc.graph
    other = GraphDocument(doc.registry)
    other.open(path)
    assert other.graph == doc.graph and other.path == path and not other.modified


def test_nodes_without_positions_get_layered_places():
    g = Graph.model_validate({"nodes": [{"id": "a", "kind": "test.source"}, {"id": "b", "kind": "test.add"}],
                              "edges": [{"from": ["a", "out"], "to": ["b", "values"]}]})
    place_unpositioned(g)
    ax, bx = g.node("a").ui["pos"][0], g.node("b").ui["pos"][0]
    assert bx > ax


def test_set_param_typing_merges_into_one_undo_step(doc):
    node = doc.add_node("test.source", (0, 0))
    count = doc.undo_stack.count()
    for value in (1, 12, 123):
        doc.set_param(node, "value", value)
    assert doc.undo_stack.count() == count + 1
    doc.undo_stack.undo()
    assert "value" not in doc.graph.node(node).params


def test_compatible_ports_agree_with_check_connection(doc):
    build(doc)
    extra = [doc.add_node(kind, (0, 0)) for kind in ("test.model", "test.keras_to_onnx", "test.pass", "test.add",
                                                      "test.tvm", "test.slow", "test.fail")]
    doc.connect((extra[0], "model"), (extra[1], "model"))
    doc.connect((extra[1], "model"), (extra[2], "model"))
    for spec in list(doc.graph.nodes):
        cls = doc.registry.get(spec.kind)
        for direction, ports in (("out", cls.outputs), ("in", cls.inputs)):
            for port in ports:
                fast = doc.compatible_ports((spec.id, port, direction))
                slow = set()
                for other in doc.graph.nodes:
                    other_cls = doc.registry.get(other.kind)
                    for name in (other_cls.inputs if direction == "out" else other_cls.outputs):
                        pair = ((spec.id, port), (other.id, name)) if direction == "out" else (
                            (other.id, name), (spec.id, port))
                        if doc.check_connection(*pair, explain=False) is None:
                            slow.add((other.id, name, "in" if direction == "out" else "out"))
                assert fast == slow, (spec.id, port, direction)


def test_new_ids_stay_readable_when_kinds_share_a_last_word(doc):
    first = doc.add_node("test.model", (0, 0))
    again = doc.add_node("test.model", (0, 0))
    assert (first, again) == ("model", "model_2")
    doc.registry.register(type("OtherModel", (doc.registry.get("test.pass"),), {"kind": "other.model"}))
    assert doc.add_node("other.model", (0, 0)) == "other_model"


def test_odd_saved_positions_do_not_break_opening_or_pasting(doc, tmp_path):
    from heiti.app.canvas.scene import GraphScene

    data = {"format": "heiti-graph", "nodes": [
        {"id": "a", "kind": "test.source", "ui": {"pos": ["x", 3]}},
        {"id": "b", "kind": "test.source", "ui": {"pos": [float("nan"), 1]}},
        {"id": "c", "kind": "test.source", "ui": {"pos": [True, 1]}},
        {"id": "d", "kind": "no.such_kind", "ui": {"pos": [5, 5]}}],
        "edges": [{"from": ["a", "out"], "to": ["d", "x"]}, {"from": ["a", "nope"], "to": ["b", "out"]}]}
    path = tmp_path / "odd.json"
    path.write_text(__import__("json").dumps(data).replace("NaN", "1e999"))
    doc.open(path)
    scene = GraphScene(doc)
    assert set(scene.nodes) == {"a", "b", "c", "d"} and scene.wires == {}
    assert all(isinstance(v, int | float) for n in "abc" for v in doc.graph.node(n).ui["pos"])
    assert not doc.validation.ok and "d" in doc.node_problems
    part = Graph.model_validate({"nodes": [{"id": "p", "kind": "test.source", "ui": {"pos": "nowhere"}}]})
    (new,) = doc.insert_fragment(part)
    assert doc.position(new) == (40.0, 40.0)


def test_an_old_file_opens_migrated_and_saves_with_versions(qapp, tmp_path):
    import json

    from heiti.engine.registry import Registry

    from tests.engine.test_migrations import OLD_QUANTISE

    reg = Registry()
    reg.load_builtins()
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_QUANTISE))
    doc = GraphDocument(reg)
    doc.open(path)
    assert doc.graph.node("q").params == {"calibration_method": "entropy", "per_channel": True}
    assert doc.validation.ok and not doc.modified
    doc.save(tmp_path / "new.json")
    nodes = {n["id"]: n for n in json.loads((tmp_path / "new.json").read_text())["nodes"]}
    assert nodes["q"]["version"] == 2 and nodes["q"]["params"]["calibration_method"] == "entropy"
    assert all(n["version"] == reg.get(n["kind"]).version for n in nodes.values())
