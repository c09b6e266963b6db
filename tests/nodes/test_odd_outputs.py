"""Models whose outputs are not a class vector: task none measures them, classification says why not.

Each model is a tiny ONNX graph built here with onnx.helper, run by model.file -> runtime.onnxruntime
through the Executor on a labelled 8x8 dataset. The 1x1xHxW map is the case that once asked for a
classes² confusion matrix (78 GiB for a 320x320 map).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.events import NodeFailed
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.registry import default_registry

N, H, W = 12, 8, 8


def _model(path: Path, nodes, outputs, initializers=()) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, H, W])],
                              outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _out(name, shape, elem=None):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)


def _logits_nodes():
    """x [1,1,8,8] -> logits [1,10]: flatten, then MatMul with a fixed matrix."""
    from onnx import helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(H * W, 10)).astype(np.float32), "w")
    return [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])], weights


def _models(folder: Path) -> dict[str, Path]:
    from onnx import TensorProto, helper, numpy_helper

    logits, weights = _logits_nodes()
    shape5 = numpy_helper.from_array(np.array([1, 1, 1, H, W], dtype=np.int64), "shape5")
    return {
        "map": _model(folder / "map.onnx", [helper.make_node("Sigmoid", ["x"], ["prob"])], [_out("prob", [1, 1, H, W])]),
        "scalar": _model(folder / "scalar.onnx", [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)],
                         [_out("s", [])]),
        "five_d": _model(folder / "five_d.onnx", [helper.make_node("Reshape", ["x", "shape5"], ["y5"])],
                         [_out("y5", [1, 1, 1, H, W])], [shape5]),
        "several": _model(folder / "several.onnx", [*logits, helper.make_node("Sigmoid", ["x"], ["prob"])],
                          [_out("logits", [1, 10]), _out("prob", [1, 1, H, W])], [weights]),
        "integer": _model(folder / "integer.onnx", [*logits, helper.make_node("ArgMax", ["logits"], ["label"], axis=1,
                                                                               keepdims=0)],
                          [_out("label", [1], TensorProto.INT64)], [weights]),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N * 3, 1, H, W)).astype(np.float32)
    y = np.repeat(np.arange(3), N)
    np.savez(folder / "data.npz", x=x, y=y)
    return folder, _models(folder)


def _run(folder: Path, model: Path, task: str, tmp_path: Path, name: str):
    graph = Graph.model_validate({"name": name, "nodes": [
        {"id": "data", "kind": "dataset.npz", "params": {"path": str(folder / "data.npz"), "test_fraction": 0.34}},
        {"id": "model", "kind": "model.file", "params": {"path": str(model), "task": task}},
        {"id": "ort", "kind": "runtime.onnxruntime", "params": {"warmup": 1, "sample_period_s": 0.02}},
    ], "edges": [{"from": ["model", "model"], "to": ["ort", "model"]},
                 {"from": ["data", "dataset"], "to": ["ort", "dataset"]}]})
    events: list = []
    executor = Executor(default_registry(), cache_dir=tmp_path / "cache", use_cache=False)
    executor.subscribe(events.append)
    executor.run(graph, tmp_path / name)
    failed = {e.node: e.message for e in events if isinstance(e, NodeFailed)}
    path = tmp_path / name / "measurements" / "ort.json"
    return failed, (json.loads(path.read_text()) if path.is_file() else None), tmp_path / name


@pytest.mark.parametrize("kind", ["map", "scalar", "five_d"])
def test_task_none_measures_latency_and_keeps_outputs(setup, tmp_path, kind):
    folder, models = setup
    failed, record, run_dir = _run(folder, models[kind], "none", tmp_path, kind)
    assert failed == {}
    assert record["task"] == "none" and record["classification"] is None
    assert record["latency_ms"]["count"] == record["dataset"]["samples"] == N
    assert record["outputs_file"] == "outputs.npz"
    from heiti.nodes.runtimes.outputs import load_outputs

    kept = load_outputs(run_dir / "nodes" / "ort" / "outputs.npz")
    assert len(kept) == N
    assert np.asarray(kept[0][0]).ndim == {"map": 4, "scalar": 0, "five_d": 5}[kind]


@pytest.mark.parametrize("kind,words", [("map", "shape [1, 1, 8, 8]"), ("scalar", "scalar"),
                                        ("five_d", "shape [1, 1, 1, 8, 8]")])
def test_classification_of_a_non_class_output_is_a_clear_error_before_running(setup, tmp_path, kind, words):
    """`heiti validate` reads the ONNX outputs and refuses the graph, naming the model node; model.file
    applies the same rule when it runs (all that .keras and .pt2 files get)."""
    import onnx
    from heiti.engine.executor import InvalidGraph
    from heiti.engine.node import NodeError
    from heiti.nodes.model_io import onnx_io
    from heiti.nodes.models import check_task_outputs

    folder, models = setup
    with pytest.raises(InvalidGraph) as refused:
        _run(folder, models[kind], "classification", tmp_path, kind)
    (problem,) = refused.value.result.problems
    assert problem.node == "model" and words in problem.message and 'task "none"' in problem.message
    assert not (tmp_path / kind / "measurements").exists()  # nothing ran
    with pytest.raises(NodeError, match="task \"none\"") as at_run:
        check_task_outputs("classification", onnx_io(onnx.load(str(models[kind])))[1], models[kind].name)
    assert words in str(at_run.value)


def test_a_map_known_only_at_run_is_refused_by_shape_not_by_an_allocation():
    """When shapes are dynamic until run, scoring names the shape: a 320x320 map read as 102,400
    classes would have asked for a 78 GiB confusion matrix."""
    from heiti.engine.node import NodeError
    from heiti.nodes.runtimes.measure import classification_quality
    from heiti.nodes.runtimes.outputs import class_scores

    with pytest.raises(NodeError, match=r"shape \[1, 1, 320, 320\] per sample.*task \"none\""):
        class_scores([[np.zeros((1, 1, 320, 320), np.float32)]] * 2, 3)
    with pytest.raises(ValueError, match="102400 classes is not a class vector"):
        classification_quality(np.array([0, 1]), np.zeros((2, 320 * 320)))
    assert class_scores([[np.ones((1, 4, 1, 1), np.float32)]] * 2, 3).shape == (2, 4)


def test_several_outputs_score_the_first(setup, tmp_path):
    folder, models = setup
    failed, record, _ = _run(folder, models["several"], "classification", tmp_path, "several")
    assert failed == {}
    c = record["classification"]
    assert len(c["confusion_matrix"]) == 10 and sum(map(sum, c["confusion_matrix"])) == N


def test_integer_outputs_are_class_indices(setup, tmp_path):
    folder, models = setup
    failed, record, _ = _run(folder, models["integer"], "classification", tmp_path, "integer")
    assert failed == {}
    c = record["classification"]
    assert sum(map(sum, c["confusion_matrix"])) == N
    # the same weights as 'several': argmax of its logits are these labels, so the accuracy matches
    failed2, record2, _ = _run(folder, models["several"], "classification", tmp_path, "several2")
    assert c["accuracy"] == pytest.approx(record2["classification"]["accuracy"])
