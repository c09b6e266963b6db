"""Graph file: round trips, helpful errors, migration, atomic saves."""

import json
import os

import pytest
from heiti.engine.graph import Graph, GraphLoadError, load_graph, loads_graph


def sample() -> dict:
    return {
        "format": "heiti-graph", "version": 1, "name": "g",
        "nodes": [
            {"id": "a", "kind": "test.source", "params": {"value": 2}, "ui": {"pos": [10, 20]}},
            {"id": "b", "kind": "test.add"},
        ],
        "edges": [{"from": ["a", "out"], "to": ["b", "values"]}],
    }


def test_round_trip_keeps_everything(tmp_path):
    graph = loads_graph(json.dumps(sample()))
    path = tmp_path / "g.json"
    graph.save(path)
    again = load_graph(path)
    assert again == graph
    assert again.node("a").ui == {"pos": [10, 20]}
    assert json.loads(path.read_text())["edges"] == [{"from": ["a", "out"], "to": ["b", "values"]}]


def test_unknown_field_names_path_and_suggests():
    data = sample()
    data["nodes"][1]["parms"] = {}
    with pytest.raises(GraphLoadError) as err:
        loads_graph(json.dumps(data))
    assert any("nodes[1].parms: unknown field — did you mean params?" in p for p in err.value.problems)


def test_not_json_gives_line_and_column():
    with pytest.raises(GraphLoadError) as err:
        loads_graph('{"format": "heiti-graph",\n "nodes": [}')
    assert "line 2" in err.value.problems[0]


def test_future_version_is_refused_with_reason():
    data = sample()
    data["version"] = 7
    with pytest.raises(GraphLoadError) as err:
        loads_graph(json.dumps(data))
    assert "newer Heiti" in err.value.problems[0]


def test_wrong_format_marker():
    with pytest.raises(GraphLoadError) as err:
        loads_graph(json.dumps({"format": "kenning", "nodes": []}))
    assert "is this a Heiti graph file" in err.value.problems[0]


def test_bad_ids_and_edges_are_named():
    data = sample()
    data["nodes"][0]["id"] = "has space"
    data["edges"][0]["from"] = ["a"]
    with pytest.raises(GraphLoadError) as err:
        loads_graph(json.dumps(data))
    text = " ".join(err.value.problems)
    assert "nodes[0].id" in text and "edges[0].from" in text


def test_older_version_is_migrated(monkeypatch):
    from heiti.engine import graph as graph_module

    def from_0(data):
        data = dict(data)
        data["nodes"] = [dict(n, id=n.pop("name")) for n in data["nodes"]]
        return data

    monkeypatch.setattr(graph_module, "MIGRATIONS", {0: from_0})
    g = loads_graph(json.dumps({"format": "heiti-graph", "version": 0,
                                "nodes": [{"name": "a", "kind": "test.source"}], "edges": []}))
    assert g.node("a").kind == "test.source" and g.version == 1


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(GraphLoadError, match="no such file"):
        load_graph(tmp_path / "nope.json")
    with pytest.raises(GraphLoadError, match="folder"):
        load_graph(tmp_path)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "g.json"
    graph = loads_graph(json.dumps(sample()))
    graph.save(path)
    before = path.read_text()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    graph.name = "changed"
    with pytest.raises(OSError):
        graph.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temp file left behind


def test_edit_api_ids_and_removal():
    g = Graph()
    a = g.add_node("test.source")
    b = g.add_node("test.source")
    assert (a.id, b.id) == ("source", "source_2")
    g.add_node("test.add", "sum")
    g.connect((a.id, "out"), ("sum", "values"))
    spec, removed = g.remove_node(a.id)
    assert spec.id == "source" and len(removed) == 1 and g.edges == []
