"""The detection example end to end: shapes -> detector -> train.torch -> ONNX -> TVM, measured on
PyTorch, ONNX Runtime and TVM, with a report. Heavy: it trains and compiles for real.

The runtimes' figures are compared with tolerances derived from the network, never guessed: their
raw output maps must lie within the fp32 tolerance of tests/tolerance.py, and their mAP may then
differ only through detections whose decisions (threshold, peak, NMS, matching, rank) sit within
that tolerance of a boundary — tests/detection_agreement.py counts those and bounds what each can
change. With none, the figures must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.engine.graph import load_graph
from heiti.engine.validate import validate

from tests.detection_agreement import (
    Comparison,
    compare,
    fragile_keys,
    ranked_decisions,
    torch_fp32_atol_propagated,
)
from tests.tolerance import assert_fp32_close

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
    # the same network and the same post-processing: the runtimes agree within what fp32 allows
    found = _check_outputs(tmp_path / "run", result, ("run_torch", "run_ort", "run_tvm"))
    for node, det in quality.items():
        _assert_same_figures(det, quality["run_torch"], found[node], node)
    # training evaluated the same network in torch, in batches: the same bound holds
    assert abs(trained.meta["test_map50"] - quality["run_torch"]["map50"]) <= found["train"].bound(slice(0, 1))
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
    nodes = ("run_torch", "run_ort", "run_tvm", "run_openvino")
    found = _check_outputs(tmp_path / "run", result, nodes)
    figures = {node: json.loads((tmp_path / "run" / "measurements" / f"{node}.json").read_text())["detection"]
               for node in nodes}
    assert figures["run_torch"]["map50"] > 0.1  # the briefly trained network does find shapes
    for node, det in figures.items():
        _assert_same_figures(det, figures["run_torch"], found[node], node)


def _check_outputs(run: Path, result, nodes: tuple[str, ...]) -> dict[str, Comparison]:
    """Every runtime's raw output maps within the fp32 tolerance of the torch runtime's, and every
    detection that differs from the torch runtime's a fragile one; returns what differs per runtime
    (and for "train", the network as training evaluated it: in torch, in batches)."""
    import copy

    import torch
    from heiti.engine.measurements import read_measurements
    from heiti.nodes.detection import load_ground_truth
    from heiti.nodes.detection.detector import predict
    from heiti.nodes.detection.metrics import Boxes
    from heiti.nodes.runtimes.outputs import load_outputs
    from heiti.nodes.torch_arch import load_model

    trained = result.outputs["train"]["model"]
    dataset = result.outputs["shapes"]["dataset"]
    config = trained.meta["postprocess"]
    x = np.ascontiguousarray(dataset.load_split("test").x, dtype=np.float32)
    module = load_model(trained.path, trained.meta.as_dict())
    atol = torch_fp32_atol_propagated(module, x)
    maps = {"train": np.concatenate([sample[0] for sample in predict(module, x)])}
    for node in nodes:
        data = read_measurements(run / "measurements" / f"{node}.json").data
        outputs = load_outputs(run / "nodes" / node / data.outputs_file)
        maps[node] = np.concatenate([np.asarray(sample[0], dtype=np.float32) for sample in outputs])
    for node, values in maps.items():
        assert_fp32_close(values, maps["run_torch"], atol, f"{node} vs run_torch output maps")
    with torch.no_grad():  # the tolerance can fail: the same network in bfloat16 is outside it
        bf16 = copy.deepcopy(module).bfloat16()(torch.from_numpy(x).bfloat16()).float().numpy()
    assert np.any(np.abs(bf16 - maps["run_torch"]) > atol)

    gt, _ = load_ground_truth(dataset, "test")
    inside = gt.image_idx < len(x)
    gt = Boxes(gt.boxes[inside], gt.labels[inside], gt.image_idx[inside])
    fragile, slack = fragile_keys(maps["run_torch"], atol, config, gt)
    reference = ranked_decisions(maps["run_torch"], config, gt)
    found = {}
    for node, values in maps.items():
        found[node] = compare(reference, ranked_decisions(values, config, gt), gt)
        found[node].iou_slack = slack
        assert found[node].keys <= fragile, (node, sorted(found[node].keys - fragile)[:10])
    print(f"output tolerance up to {atol.max():.2e}; {len(fragile)} fragile detections; differing: "
          + ", ".join(f"{n} {len(c.keys)}" for n, c in found.items()))
    return found


def _assert_same_figures(det: dict, reference: dict, found: Comparison, node: str) -> None:
    """mAPs within what the differing detections allow (equal when none differ), detection counts by
    at most those that exist on one side only, mean IoU within the IoU slack when nothing differs."""
    for key, thresholds in (("map50", slice(0, 1)), ("map50_95", slice(None))):
        assert abs(det[key] - reference[key]) <= found.bound(thresholds), (node, key, det[key], reference[key])
    assert abs(det["detections"] - reference["detections"]) <= found.appeared, node
    if not found.keys:
        assert abs((det["mean_iou"] or 0.0) - (reference["mean_iou"] or 0.0)) <= found.iou_slack, node
