"""Node-kind migrations: an old file's params reach the kind in their current shape, and what is
written back (a run's graph.json, the editor's save) carries each kind's version."""

from __future__ import annotations

import json

from heiti.engine.executor import Executor
from heiti.engine.graph import load_graph
from heiti.engine.migrations import upgrade_graph, upgraded
from heiti.engine.node import Node, Out
from heiti.engine.payloads import Value
from heiti.engine.registry import Registry
from heiti.engine.validate import validate
from pydantic import BaseModel, ConfigDict

# a graph saved before node versions were written, with the param's old name
OLD_QUANTISE = {
    "format": "heiti-graph", "version": 1, "name": "old",
    "nodes": [
        {"id": "data", "kind": "dataset.digits"},
        {"id": "cnn", "kind": "model.torch_cnn"},
        {"id": "onnx", "kind": "convert.torch_to_onnx"},
        {"id": "q", "kind": "optimize.onnx_quantize", "params": {"calibrate_method": "entropy", "per_channel": True}},
    ],
    "edges": [
        {"from": ["data", "dataset"], "to": ["cnn", "dataset"]},
        {"from": ["cnn", "model"], "to": ["onnx", "model"]},
        {"from": ["onnx", "model"], "to": ["q", "model"]},
        {"from": ["data", "dataset"], "to": ["q", "dataset"]},
    ],
}


def builtins() -> Registry:
    reg = Registry()
    reg.load_builtins()
    return reg


def test_an_old_quantise_node_validates_with_the_renamed_param(tmp_path):
    reg = builtins()
    assert reg.get("optimize.onnx_quantize").version == 2
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_QUANTISE))
    graph = load_graph(path)
    result = validate(graph, reg)
    assert result.ok, [str(p) for p in result.problems]
    assert result.params["q"].calibration_method == "entropy" and result.params["q"].per_channel

    saved = upgraded(graph, reg)
    node = saved.node("q")
    assert node.version == 2 and node.params == {"calibration_method": "entropy", "per_channel": True}
    assert saved.node("data").version == reg.get("dataset.digits").version
    saved.save(tmp_path / "new.json")
    again = load_graph(tmp_path / "new.json")
    assert validate(again, reg).ok and again.node("q").params == node.params


def test_the_old_name_in_a_current_file_is_an_error_that_names_the_new_one():
    reg = builtins()
    graph = load_graph_from(OLD_QUANTISE)
    graph.node("q").version = 2
    problems = validate(graph, reg).for_node("q")
    assert any("calibrate_method: unknown field — did you mean calibration_method?" in p.message for p in problems)


def test_a_node_saved_by_a_newer_heiti_is_refused_not_migrated():
    reg = builtins()
    graph = load_graph_from(OLD_QUANTISE)
    graph.node("q").version = 3
    assert [p.code for p in validate(graph, reg).for_node("q")] == ["kind_version"]
    assert upgrade_graph(graph, reg) == [] and graph.node("q").version == 3


def load_graph_from(data: dict):
    from heiti.engine.graph import parse_graph

    return parse_graph(json.loads(json.dumps(data)))


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scaled(Node):
    """Version 3: `factor` was `gain` in version 1 and `scale` in version 2."""

    kind = "migr.scaled"
    version = 3

    class Params(_P):
        factor: float = 1.0

    outputs = {"out": Out(Value)}

    @classmethod
    def migrate(cls, params, from_version):
        params = dict(params)
        if from_version < 2 and "gain" in params:
            params["scale"] = params.pop("gain")
        if from_version < 3 and "scale" in params:
            params["factor"] = params.pop("scale")
        return params

    def run(self, ctx):
        return {"out": Value(value=2 * self.params.factor)}


def test_an_old_file_runs_with_migrated_params_and_records_the_version(tmp_path):
    reg = Registry()
    reg.register(Scaled)
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "heiti-graph", "version": 1, "nodes": [
        {"id": "v1", "kind": "migr.scaled", "params": {"gain": 5}},
        {"id": "v2", "kind": "migr.scaled", "version": 2, "params": {"scale": 7}},
        {"id": "v3", "kind": "migr.scaled", "version": 3, "params": {"factor": 9}},
    ], "edges": []}))
    result = Executor(reg, cache_dir=tmp_path / "cache").run(load_graph(path), tmp_path / "run")
    assert {n: out["out"].value for n, out in result.outputs.items()} == {"v1": 10, "v2": 14, "v3": 18}
    as_run = json.loads((tmp_path / "run" / "graph.json").read_text())
    assert [(n["version"], n["params"]) for n in as_run["nodes"]] == [(3, {"factor": 5}), (3, {"factor": 7}),
                                                                      (3, {"factor": 9})]
    assert json.loads(path.read_text())["nodes"][0]["params"] == {"gain": 5}  # the source file is left alone
