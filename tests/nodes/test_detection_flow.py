"""The detection example end to end: shapes -> detector -> train.torch -> ONNX -> TVM, measured on
PyTorch, ONNX Runtime and TVM, with a report. Heavy: it trains and compiles for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.engine.graph import load_graph
from heiti.engine.validate import validate

GRAPH = Path(__file__).resolve().parents[2] / "resources" / "graphs" / "shapes_detection.json"


def test_example_graph_validates():
    from heiti.engine.registry import default_registry

    result = validate(load_graph(GRAPH), default_registry())
    assert result.ok, result


@pytest.mark.heavy
def test_shapes_detection_example_runs_end_to_end(tmp_path):
    graph = load_graph(GRAPH)
    events = []
    executor = Executor(cache_dir=tmp_path / "cache")
    executor.subscribe(events.append)
    result = executor.run(graph, tmp_path / "run")
    assert result.status == "ok", result.states
    # training shows the task's own quality per epoch, decoded as after a runtime
    val_map = [e.value for e in events if e.type == "node_metric" and e.node == "train" and e.name == "val_map50"]
    assert len(val_map) == graph.node("train").params.get("epochs", len(val_map)) and val_map[-1] > val_map[0]

    trained = result.outputs["train"]["model"]
    assert trained.meta["postprocess"]["type"] == "centernet"
    print(f"training: {trained.meta['train_time_s']:.1f} s")

    quality = {}
    for node in ("run_torch", "run_ort", "run_tvm"):
        record = json.loads((tmp_path / "run" / "measurements" / f"{node}.json").read_text())
        assert record["task"] == "detection"
        det = record["detection"]
        quality[node] = det
        print(node, f"mAP@0.5 {det['map50']:.3f}  mAP@[.5:.95] {det['map50_95']:.3f}  "
                    f"mean latency {record['latency_ms']['mean']:.3f} ms")
        assert det["map50"] >= 0.8
        assert set(det["ap_per_class"]) == {"circle", "square", "triangle"}
        assert len(det["map_vs_threshold"]["threshold"]) == len(det["map_vs_threshold"]["map50"])
    # the same network and the same post-processing: the runtimes must agree
    maps = np.array([q["map50"] for q in quality.values()])
    assert np.ptp(maps) < 0.01, maps
    assert trained.meta["test_map50"] == pytest.approx(quality["run_torch"]["map50"], abs=0.01)
    assert (tmp_path / "run" / "report.html").is_file()
    html = (tmp_path / "run" / "report.html").read_text()
    assert "mAP" in html


def _small_graph() -> dict:
    """A tiny detector through every runtime that reads ONNX-derived models, on 24 test images."""
    nodes = [
        ("shapes", "dataset.shapes", {"count": 240, "size": 32, "seed": 2}),
        ("detector", "model.torch_detector", {"width": 8}),
        ("train", "train.torch", {"epochs": 15, "batch_size": 16, "lr": 0.004}),
        ("to_onnx", "convert.torch_to_onnx", {}),
        ("tvm", "compile.tvm", {"target": "host"}),
        ("openvino", "compile.openvino", {"precision": "f32"}),
    ]
    runtimes = {"run_torch": ("runtime.torch", "train"), "run_ort": ("runtime.onnxruntime", "to_onnx"),
                "run_tvm": ("runtime.tvm", "tvm"), "run_openvino": ("runtime.openvino", "openvino")}
    edges = [("shapes", "dataset", "detector", "dataset"), ("detector", "model", "train", "model"),
             ("shapes", "dataset", "train", "dataset"), ("train", "model", "to_onnx", "model"),
             ("to_onnx", "model", "tvm", "model"), ("to_onnx", "model", "openvino", "model")]
    for node, (kind, source) in runtimes.items():
        nodes.append((node, kind, {"warmup": 1}))
        edges += [(source, "model", node, "model"), ("shapes", "dataset", node, "dataset")]
    return {"format": "heiti-graph", "version": 1, "name": "detection-runtimes",
            "nodes": [{"id": i, "kind": k, "params": p} for i, k, p in nodes],
            "edges": [{"from": [a, b], "to": [c, d]} for a, b, c, d in edges]}


@pytest.mark.heavy
def test_every_runtime_gives_the_same_detections(tmp_path):
    """Decoding and NMS run after the runtime, so the same network gives the same figures everywhere."""
    from heiti.engine.graph import Graph

    result = Executor(cache_dir=tmp_path / "cache").run(Graph.model_validate(_small_graph()), tmp_path / "run")
    assert result.status == "ok", result.states
    figures = {}
    for node in ("run_torch", "run_ort", "run_tvm", "run_openvino"):
        det = json.loads((tmp_path / "run" / "measurements" / f"{node}.json").read_text())["detection"]
        figures[node] = (det["map50"], det["map50_95"], det["detections"], det["mean_iou"] or 0.0)
    reference = np.array(figures["run_torch"])
    assert reference[0] > 0.1  # the briefly trained network does find shapes
    for node, values in figures.items():
        np.testing.assert_allclose(values, reference, atol=2e-3, err_msg=node)
