"""The detection example end to end: shapes -> detector -> train.torch -> ONNX -> TVM, measured on
PyTorch, ONNX Runtime and TVM, with a report. Heavy: it trains and compiles for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.executor import Executor
from engine.graph import load_graph
from engine.validate import validate

GRAPH = Path(__file__).resolve().parents[2] / "resources" / "graphs" / "shapes_detection.json"


def test_example_graph_validates():
    from engine.registry import default_registry

    result = validate(load_graph(GRAPH), default_registry())
    assert result.ok, result


@pytest.mark.heavy
def test_shapes_detection_example_runs_end_to_end(tmp_path):
    graph = load_graph(GRAPH)
    result = Executor(cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
    assert result.status == "ok", result.states

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
    assert (tmp_path / "run" / "report.html").is_file()
    html = (tmp_path / "run" / "report.html").read_text()
    assert "mAP" in html
