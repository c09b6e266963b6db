"""Weights pre-packed at compile time (heiti.nodes.tvm_prepack), with real TVM on a deep 1x1 conv.

The model: a 1x1 conv 96 -> 320 on a 7x7 map (MobileNetV2's deep layers: more output channels
than pixels) + ReLU, global pooling and a dense layer. After the default schedules the kernels
read their weights in the blocked order of their loops, from constants packed once at compile
time: no repack function and no repack block left, and the results still agree with ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHAPE = (1, 96, 7, 7)


def make_deep_conv(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, np.sqrt(2 / 96), (320, 96, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (320,)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, np.sqrt(1 / 320), (10, 320)).astype(np.float32), "wg"),
             numpy_helper.from_array(np.zeros(10, np.float32), "bg")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def deep_conv(tmp_path_factory) -> Path:
    return make_deep_conv(tmp_path_factory.mktemp("tvm_prepack") / "deep.onnx")


def scheduled(path: Path, prepack: bool):
    import onnx
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("host")
    mod = ts.prepare(from_onnx(onnx.load(str(path)), shape_dict={"x": list(SHAPE)}), target, prepack=prepack)
    database, _ = ts.default_schedule_database(mod, target)
    return ts.apply_database(mod, target, database)


def constants(mod) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    found: list[np.ndarray] = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.GenericConst) else None)
    return [c for c in found if c.ndim >= 2]


def test_the_module_holds_packed_weights_and_no_repack(deep_conv):
    from tvm import relax

    packed = scheduled(deep_conv, prepack=True)
    names = [gv.name_hint for gv in packed.functions]
    assert not [n for n in names if n.endswith("_weight_prepack")], names  # evaluated, not called
    kernels = [f for f in packed.functions.values() if not isinstance(f, relax.Function)]
    assert kernels and not [f for f in kernels if "layout_rewrite_preproc" in f.script()]  # no repack per call

    plain = scheduled(deep_conv, prepack=False)
    hwio = [c for c in constants(plain) if c.shape == (1, 1, 96, 320)]
    assert len(hwio) == 1  # the control: without prepack the conv reads its HWIO constant
    conv_w = [c for c in constants(packed) if c.size == 96 * 320]
    # the conv's weights are held in another (blocked) shape, the same values in another order
    assert len(conv_w) == 1 and conv_w[0].shape != hwio[0].shape and conv_w[0].ndim > 2
    np.testing.assert_array_equal(np.sort(conv_w[0], axis=None), np.sort(hwio[0], axis=None))


def test_packed_build_agrees_with_onnxruntime(deep_conv, tmp_path):
    import onnxruntime as ort
    from heiti.engine import ModelArtifact
    from heiti.nodes.compilers import TVMCompile

    from tests.nodes.test_tvm_schedule import Ctx, run_tvm
    from tests.tolerance import assert_fp32_close, onnx_fp32_atol

    model = ModelArtifact(path=deep_conv, model_format="onnx", inputs=[{"name": "x", "shape": list(SHAPE), "dtype": "float32"}],
                          outputs=[{"name": "y", "shape": [1, 10], "dtype": "float32"}])
    built = TVMCompile({}).run(Ctx(tmp_path), model=model)["model"]
    session = ort.InferenceSession(str(deep_conv), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    for threads in (1, 2):
        assert_fp32_close(run_tvm(built.path, x, threads), session.run(None, {"x": x})[0], onnx_fp32_atol(deep_conv, x),
                          f"packed TVM build ({threads} threads) against ONNX Runtime")
