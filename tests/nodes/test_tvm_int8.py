"""compile.tvm's integer kernels for quantised models (heiti.nodes.tvm_int8), with real TVM.

Models: small CNNs made here (onnx.helper, quantised to QDQ by ONNX Runtime's quantize_static,
per tensor and per channel; a Keras CNN converted to full-int8 TFLite). Tolerances come from the
quantisation step: an integer kernel is exact up to its requantisation, which rounds
acc * (s_x*s_w/s_y) half to even in float32, as ONNX Runtime's QLinearConv does; the two can
differ only where float rounding of the multiplier lands on the other side of a half: at most
one output step per requantised layer. A step that flips in one layer moves the next layer's
input by one step; on these small nets that stays within one step per layer, so a net with L
requantised layers (plus the input quantisation) must agree within L + 1 steps, and on argmax.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .test_tvm_schedule import Ctx, run_tvm

SHAPE = (1, 3, 16, 16)


def make_float_cnn(path: Path, layers: str = "cnn") -> Path:
    """A float ONNX model: 'cnn' = conv3x3(3->8)+relu, conv3x3/2(8->16)+clip, conv1x1(16->16)+relu,
    global pool, gemm(16->16); 'conv' = one conv3x3(8->16) with bias (no activation)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name)

    if layers == "conv":
        inits = [const("w", (16, 8, 3, 3), 72), const("b", (16,), 72)]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
        x_shape, y_shape = [1, 8, 16, 16], [1, 16, 16, 16]
    else:
        inits = [const("w1", (8, 3, 3, 3), 27), const("b1", (8,), 27), const("w2", (16, 8, 3, 3), 72),
                 const("w3", (16, 16, 1, 1), 16), const("b3", (16,), 16), const("w4", (16, 16), 16),
                 const("b4", (16,), 16),
                 numpy_helper.from_array(np.array(0, np.float32), "lo"),
                 numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c1"], ["r1"]),
                 helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
                 helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
                 helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
                 helper.make_node("Relu", ["c3"], ["r3"]),
                 helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
                 helper.make_node("Flatten", ["p"], ["f"]),
                 helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], transB=1)]
        x_shape, y_shape = list(SHAPE), [1, 16]
    graph = helper.make_graph(nodes, layers, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def quantise(float_path: Path, out: Path, per_channel: bool, shape: tuple[int, ...], reduce_range: bool = False) -> Path:
    """ONNX Runtime static QDQ quantisation as optimize.onnx_quantize does (uint8 activations, int8 weights)."""
    from onnxruntime import quantization as q

    class Reader:
        def __init__(self) -> None:
            self.rng, self.left = np.random.default_rng(0), 16

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.left -= 1
            return None if self.left < 0 else {"x": self.rng.standard_normal(shape, dtype=np.float32)}

    q.quantize_static(str(float_path), str(out), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, per_channel=per_channel,
                      reduce_range=reduce_range)
    return out


def compile_onnx(path: Path, workdir: Path, shape: tuple[int, ...], out_shape: list[int], **params):
    from heiti.engine import ModelArtifact
    from heiti.nodes.compilers import TVMCompile

    workdir.mkdir(parents=True, exist_ok=True)
    model = ModelArtifact(path=path, model_format="onnx", inputs=[{"name": "x", "shape": list(shape), "dtype": "float32"}],
                          outputs=[{"name": "y", "shape": out_shape, "dtype": "float32"}])
    return TVMCompile(params).run(Ctx(workdir), model=model)["model"]


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def output_step(path: Path) -> float:
    """The scale of the QuantizeLinear feeding the model's output (one output quantisation step)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    last = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    return float(inits[last.input[1]])


@pytest.fixture(scope="module", params=[False, True], ids=["per-tensor", "per-channel"])
def qdq_cnn(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    # 7-bit weights per channel: ONNX Runtime's u8s8 kernels on AVX2 without VNNI saturate int16
    # pair sums of full-range weights (see the single-conv test); TVM's int16 kernels do not
    return quantise(make_float_cnn(folder / "cnn.onnx"), folder / "cnn_qdq.onnx", request.param, SHAPE,
                    reduce_range=request.param)


def test_rewrite_turns_every_dequantised_conv_and_gemm_into_int32_kernels(qdq_cnn):
    import onnx
    from heiti.nodes import tvm_int8
    from tvm.relax.frontend.onnx import from_onnx

    mod, stats = tvm_int8.rewrite(from_onnx(onnx.load(str(qdq_cnn)), shape_dict={"x": list(SHAPE)}))
    assert stats.quantized and stats.conv2d == 3 and stats.matmul == 1, stats
    assert stats.requantized == 4 and stats.float_conv2d == 0 and stats.float_matmul == 0, stats
    text = mod.script()
    assert text.count('out_dtype="int32"') == 4
    assert "R.dequantize(metadata" not in text  # no weight is dequantised to float any more
    floats = tvm_int8.rewrite(from_onnx(onnx.load(str(qdq_cnn.with_name("cnn.onnx"))), shape_dict={"x": list(SHAPE)}))
    assert not floats[1].quantized and floats[1].conv2d == 0  # a float model is left alone


def test_default_schedule_runs_int_convs_on_vpmaddwd(qdq_cnn):
    """On an AVX2 CPU the int16 convolutions are tensorized with vpmaddwd (no VNNI needed)."""
    import onnx
    import tvm
    from heiti.nodes import tvm_int8
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from heiti.nodes.tvm_int8_avx2 import has_avx2
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("host")
    if not has_avx2(target):
        pytest.skip("no AVX2 on this CPU: the integer convolutions use the generic schedule")
    mod, _ = tvm_int8.rewrite(from_onnx(onnx.load(str(qdq_cnn)), shape_dict={"x": list(SHAPE)}))
    mod = ts.prepare(mod, target)
    database, stats = ts.default_schedule_database(mod, target)
    assert stats.scheduled == stats.tasks
    mod = ts.apply_database(mod, target, database)
    funcs = {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    tensorized = [n for n, text in funcs.items() if "llvm.x86.avx2.pmadd.wd" in text]
    # every conv (the RGB one padded to 4 input channels) and the 16->16 gemm: 8-multiple outputs
    assert len(tensorized) == 4, sorted(funcs)
    for name in tensorized:
        assert "T.parallel(" in funcs[name], name


@pytest.fixture(scope="module")
def integer_build(qdq_cnn, tmp_path_factory):
    return compile_onnx(qdq_cnn, tmp_path_factory.mktemp("integer"), SHAPE, [1, 16], int8="integer")


def test_integer_kernels_agree_with_onnxruntime_int8(qdq_cnn, integer_build):
    meta = integer_build.meta["tvm_int8"]
    assert meta["mode"] == "integer" and meta["integer_conv2d"] == 3 and meta["integer_matmul"] == 1
    step = output_step(qdq_cnn)
    layers = 5  # requantised: conv, conv, conv, pool, gemm
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(6):
        x = rng.standard_normal(SHAPE, dtype=np.float32)
        ref, got = ort_run(qdq_cnn, x), run_tvm(integer_build.path, x)
        worst = max(worst, float(np.abs(got - ref).max()) / step)
        assert got.argmax() == ref.argmax()
    assert worst <= layers + 1 + 1e-3, f"{worst:.2f} output steps from ONNX Runtime"


def test_float_mode_keeps_float_maths(qdq_cnn, tmp_path):
    model = compile_onnx(qdq_cnn, tmp_path / "float", SHAPE, [1, 16], int8="float")
    meta = model.meta["tvm_int8"]
    assert meta == {"mode": "float", "requested": "float", "why": "requested"}
    x = np.random.default_rng(2).standard_normal(SHAPE, dtype=np.float32)
    ref = ort_run(qdq_cnn, x)
    got = run_tvm(model.path, x)
    assert np.abs(got - ref).max() <= 6 * output_step(qdq_cnn) + 1e-6 and got.argmax() == ref.argmax()


def _integer_conv_reference(qdq: Path, x: np.ndarray) -> np.ndarray:
    """numpy: quantise x, int64 convolution of (x_q - zp_x) and (w_q - zp_w), int32 bias, requantise.

    The requantisation uses the same float32 multiplier s_x*s_w/s_y and round half to even, so
    the TVM kernel must match it exactly (integers are exact; the float ops are the same ones).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    deq = {n.output[0]: n.input for n in model.graph.node if n.op_type == "DequantizeLinear"}
    qin = {n.input[0]: n.input for n in model.graph.node if n.op_type == "QuantizeLinear"}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    x_in, w_in, b_in = (deq[name] for name in conv.input)
    s_x, zp_x = float(inits[qin["x"][1]]), int(inits[qin["x"][2]])
    x_q = np.clip(np.round(x / np.float32(s_x)) + zp_x, 0, 255).astype(np.int64) - zp_x
    w = inits[w_in[0]].astype(np.int64) - inits[w_in[2]].astype(np.int64).reshape(-1, 1, 1, 1)
    s_w = np.broadcast_to(inits[w_in[1]].astype(np.float64), (w.shape[0],))
    y_q_name = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv.output[0])
    s_y, zp_y = float(inits[y_q_name.input[1]]), int(inits[y_q_name.input[2]])
    padded = np.pad(x_q, ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, w.shape[0], x.shape[2], x.shape[3]), np.int64)
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
            acc += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
    scale = s_x * s_w
    b = inits[b_in[0]].astype(np.float64) * inits[b_in[1]].astype(np.float64)
    acc += np.round(b / scale).astype(np.int64).reshape(1, -1, 1, 1)
    multiplier = (scale / s_y).astype(np.float32).reshape(1, -1, 1, 1)
    y_q = np.clip(np.round(acc.astype(np.float32) * multiplier) + zp_y, 0, 255)
    return ((y_q - zp_y) * np.float32(s_y)).astype(np.float32)


@pytest.mark.parametrize(("per_channel", "reduce_range"), [(False, False), (True, False), (True, True)],
                         ids=["per-tensor", "per-channel", "per-channel-7bit"])
def test_one_integer_conv_matches_the_integer_maths_exactly(tmp_path, per_channel, reduce_range):
    """Exact against numpy. ONNX Runtime agrees within a step except with full-range per-channel
    weights on a CPU without VNNI: its u8s8 AVX2 kernel (vpmaddubsw) saturates pair sums at
    32767 there (measured: 16 steps off on 35 of 4096 outputs) — why reduce_range exists."""
    folder = tmp_path
    qdq = quantise(make_float_cnn(folder / "conv.onnx", "conv"), folder / "conv_qdq.onnx", per_channel, (1, 8, 16, 16),
                   reduce_range)
    model = compile_onnx(qdq, folder / "build", (1, 8, 16, 16), [1, 16, 16, 16], int8="integer")
    assert model.meta["tvm_int8"]["integer_conv2d"] == 1 and model.meta["tvm_int8"]["requantized"] == 1
    step = output_step(qdq)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((1, 8, 16, 16), dtype=np.float32)
        got = run_tvm(model.path, x)
        np.testing.assert_array_equal(got, _integer_conv_reference(qdq, x))
        ref = ort_run(qdq, x)
        if per_channel and not reduce_range:  # ORT may saturate (above); the argmax over channels still holds
            assert np.mean(got.argmax(axis=1) == ref.argmax(axis=1)) >= 0.95
        else:  # ONNX Runtime's QLinearConv: the same maths, its multiplier rounded its own way (<= 1 step)
            assert np.abs(got - ref).max() <= step * (1 + 1e-4)


def _keras_int8_tflite(path: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layers = keras.layers
    x_in = keras.Input((16, 16, 3), batch_size=1, name="x")
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(x_in)
    h = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.ReLU(6.0)(layers.Conv2D(16, 1)(h))
    out = layers.Dense(16)(layers.GlobalAveragePooling2D()(h))
    net = keras.Model(x_in, out)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.standard_normal((1, 16, 16, 3), dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


@pytest.mark.heavy
def test_full_int8_tflite_agrees_with_litert(tmp_path):
    """TFLite rounds its fixed-point requantisation half away from zero, TVM half to even: <= 1 step per layer."""
    from ai_edge_litert.interpreter import Interpreter
    from heiti.engine import ModelArtifact
    from heiti.nodes.compilers import TVMCompile

    path = _keras_int8_tflite(tmp_path / "net.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    i_in, i_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    model = ModelArtifact(path=path, model_format="tflite",
                          inputs=[{"name": i_in["name"], "shape": [1, 16, 16, 3], "dtype": "int8"}],
                          outputs=[{"name": i_out["name"], "shape": [1, 16], "dtype": "int8"}])
    (tmp_path / "build").mkdir()
    built = TVMCompile({"int8": "integer"}).run(Ctx(tmp_path / "build"), model=model)["model"]
    meta = built.meta["tvm_int8"]
    assert meta["integer_conv2d"] == 4 and meta["integer_matmul"] == 1 and meta["requantized"] == 5, meta
    layers = 6  # requantised: four convs, pool, dense
    rng = np.random.default_rng(4)
    from heiti.nodes.runtimes.backends.tvm import TVMSession

    session = TVMSession(str(built.path), {"threads": 1, "inputs": built.inputs})
    try:
        for _ in range(6):
            x = rng.integers(-128, 128, (1, 16, 16, 3), dtype=np.int8)
            interpreter.set_tensor(i_in["index"], x)
            interpreter.invoke()
            ref = interpreter.get_tensor(i_out["index"]).astype(np.int32)
            got = session.run([x])[0].astype(np.int32)
            assert np.abs(got - ref).max() <= layers + 1
            assert got.argmax() == ref.argmax()
    finally:
        session.close()


def test_auto_picks_integer_kernels_only_where_measured_faster():
    from heiti.nodes import tvm_int8
    from heiti.nodes.compilers import resolve_target
    from heiti.nodes.tvm_int8_avx2 import has_avx2

    host, _ = resolve_target("host")
    arm, _ = resolve_target("aarch64")
    assert tvm_int8.choose("auto", arm)[0] == "float"  # no vpmaddwd kernel there: float maths
    assert tvm_int8.choose("auto", host)[0] == ("integer" if has_avx2(host) else "float")
    assert tvm_int8.choose("integer", arm) == ("integer", "requested")
    assert tvm_int8.choose("float", host) == ("float", "requested")
