"""package:<module>/<file> paths, and import hints that match the error (light: no compiler runs)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from heiti.engine.package_files import package_file

DET = "package:rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
CLS = "package:rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"


def test_a_package_file_is_found_without_importing_the_package():
    """Importing rapidocr_onnxruntime would import OpenCV; finding its files must not."""
    code = ("import sys; from heiti.engine.package_files import package_file; "
            f"p = package_file({DET!r}); print(p.is_file(), 'rapidocr_onnxruntime' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False"]


@pytest.mark.parametrize("value,words", [
    ("package:no_such_package_h8/model.onnx", "no installed Python package 'no_such_package_h8'"),
    ("package:sklearn", "write package:<module>/<path inside the package>"),
    ("package:sklearn/../../../etc/passwd", "leaves the package folder"),
])
def test_bad_package_paths_say_what_is_wrong(value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        package_file(value)


def test_validation_and_runs_resolve_package_paths(tmp_path):
    from heiti.engine.graph import Graph
    from heiti.engine.registry import default_registry
    from heiti.engine.validate import validate

    def graph(path):
        return Graph.model_validate({"name": "p", "nodes": [
            {"id": "m", "kind": "model.file", "params": {"path": path, "task": "none"}}], "edges": []})

    assert validate(graph(DET), default_registry()).ok
    result = validate(graph("package:no_such_package_h8/m.onnx"), default_registry())
    assert not result.ok and any("no_such_package_h8" in str(p) for p in result.problems)


def _qoperator_model(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("xs", 0.1, np.float32), ("xz", 0, np.uint8), ("ws", 0.1, np.float32), ("wz", 0, np.uint8),
        ("ys", 0.1, np.float32), ("yz", 0, np.uint8))]
    inits.append(numpy_helper.from_array(np.ones((1, 1, 1, 1), np.uint8), "w"))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_hints_blame_quantisation_only_for_quantised_models(tmp_path):
    from heiti.nodes.optimize_onnx import import_hint

    reshape = "Reshape requires the input new shape to be Shape"
    plain = import_hint(reshape, package_file(CLS))
    assert "QOperator" not in plain and "fix_shape" in plain and "onnx_simplify" in plain
    quantised = import_hint("some frontend error", _qoperator_model(tmp_path / "q.onnx"))
    assert "QOperator" in quantised and "QLinearConv" in quantised


def test_onnx_simplify_folds_in_graph_shapes_of_a_paddle_export(tmp_path):
    """PaddleOCR's direction classifier computes a Reshape's shape in the graph (Shape -> Slice ->
    Concat); with fixed shapes onnxslim folds it into a constant, and ONNX Runtime gives the same
    probabilities before and after."""
    import onnx
    import onnxruntime as ort
    from heiti.nodes.optimize_onnx import simplify_onnx

    source = package_file(CLS)
    ops_before = [n.op_type for n in onnx.load(str(source)).graph.node]
    stats = simplify_onnx(source, tmp_path / "s.onnx", {"x": [1, 3, 48, 192]})
    simplified = onnx.load(str(tmp_path / "s.onnx"))
    constants = {t.name for t in simplified.graph.initializer}
    assert "Shape" in ops_before and "Reshape" in ops_before
    assert "Shape" not in {n.op_type for n in simplified.graph.node}
    assert all(n.input[1] in constants for n in simplified.graph.node if n.op_type == "Reshape")
    assert stats["nodes_after"] < stats["nodes_before"]
    x = np.random.default_rng(0).normal(size=(1, 3, 48, 192)).astype(np.float32)
    a = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # folding BatchNormalization into the convolutions rounds each weight once (a relative eps)
    # and reorders nothing else: the softmax outputs (<= 1) move by at most eps times the
    # accumulation depth (sum of K over the convolutions and the Gemm: 2536 here)
    assert np.max(np.abs(a - b)) <= 2536 * np.finfo(np.float32).eps
