"""Every runtime back-end on one real tiny digits CNN: same weights, so the same logits."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.nodes.runtimes.backends import BaseSession, open_session, session_steps
from heiti.nodes.runtimes.backends.litert import dequantize, quantize

from tests.nodes import tiny_models
from tests.tolerance import assert_fp32_close, decided

# (runtime, model format, layout the model expects, extra options)
CASES = [
    ("onnxruntime", "onnx", "NCHW", {"threads": 1, "graph_optimization": "basic"}),
    ("openvino", "onnx", "NCHW", {"threads": 1}),
    ("tvm", "tvm", "NCHW", {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]}),
    ("torch", "torch", "NCHW", {}),
    ("torch", "pt2", "NCHW", {}),
    ("keras", "keras", "NHWC", {}),
    ("litert", "tflite", "NHWC", {"threads": 1}),
    ("litert", "tflite", "NHWC", {"xnnpack": False}),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_models.shared(tmp_path_factory)


@pytest.fixture(scope="module")
def test_x(tiny):
    with np.load(tiny.dataset, allow_pickle=False) as data:
        return data["x_test"][:24], data["y_test"][:24]


@pytest.fixture(scope="module")
def reference(tiny, test_x):
    """Logits from the torch module itself, the source of every other format."""
    import torch
    from heiti.nodes.torch_arch import load_model

    with torch.inference_mode():
        return load_model(tiny.paths["torch"]).eval()(torch.from_numpy(test_x[0])).numpy()


@pytest.fixture(scope="module")
def tolerance(tiny, test_x):
    """Per-logit fp32 bound of the tiny CNN (tests/tolerance.py): the formats differ only in summation order."""
    from heiti.nodes.torch_arch import load_model

    from tests.tolerance import torch_fp32_atol

    return torch_fp32_atol(load_model(tiny.paths["torch"]).eval(), test_x[0])


def _run_each(session, x, layout):
    outs = []
    for i in range(len(x)):
        sample = x[i:i + 1] if layout == "NCHW" else x[i:i + 1].transpose(0, 2, 3, 1)
        outs.append(session.run([sample])[0].reshape(1, -1))
    return np.concatenate(outs)


@pytest.mark.parametrize(("runtime", "fmt", "layout", "options"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_backend_matches_torch(tiny, test_x, reference, tolerance, runtime, fmt, layout, options):
    options = {**options, "meta": tiny.meta}
    session = open_session(runtime, str(tiny.paths[fmt]), options)
    try:
        logits = _run_each(session, test_x[0], layout)
    finally:
        session.close()
    assert_fp32_close(logits, reference, tolerance, f"{runtime} vs torch")
    sure = decided(reference, tolerance)  # rows whose class no fp32 difference can flip
    assert np.array_equal(logits.argmax(1)[sure], reference.argmax(1)[sure])
    if session.inputs:
        assert session.inputs[0]["dtype"] == "float32"
        assert len(session.inputs[0]["shape"]) == 4


def test_steps_compose_to_run(tiny, test_x):
    """prepare -> stage -> run_prepared -> finish is exactly run(), for each in-process session."""
    for runtime, fmt, layout, options in CASES[:3] + CASES[-2:]:
        session = open_session(runtime, str(tiny.paths[fmt]), {**options, "meta": tiny.meta})
        sample = test_x[0][:1] if layout == "NCHW" else test_x[0][:1].transpose(0, 2, 3, 1)
        prepare, stage, run_call, finish = session_steps(session)
        feed = prepare([sample])
        if stage is not None:
            stage(feed)
        stepped = finish(run_call(feed))
        np.testing.assert_array_equal(stepped[0], session.run([sample])[0])
        session.close()


def test_run_only_session_gets_pass_through_steps():
    class Doubler:
        def run(self, inputs):
            return [inputs[0] * 2]

    prepare, stage, run_call, finish = session_steps(Doubler())
    assert stage is None and finish is None
    out = run_call(prepare([np.ones(3, dtype=np.float32)]))
    assert np.array_equal(out[0], np.full(3, 2.0))
    assert session_steps(BaseSession())[1] is None  # the no-op stage is skipped


def test_int8_quantisation_round_trip():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=1000).astype(np.float32)
    scale, zp = 1 / 255, -1
    q = quantize(x, scale, zp, np.int8)
    assert q.dtype == np.int8
    assert np.max(np.abs(dequantize(q, scale, zp) - x)) <= scale / 2 + 1e-7
    clipped = quantize(np.array([100.0, -100.0], np.float32), scale, zp, np.int8)
    assert clipped.tolist() == [127, -128]
    assert quantize(np.array([1.0], np.float32), 0.5, 128, np.uint8).tolist() == [130]


def test_litert_int8_model_runs_on_float_inputs(tiny, test_x, reference):
    session = open_session("litert", str(tiny.paths["tflite_int8"]), {"threads": 1})
    detail = session.inputs[0]
    assert detail["dtype"] == "int8" and detail["scale"] > 0
    assert session.outputs[0]["dtype"] == "int8" and "zero_point" in session.outputs[0]
    logits = _run_each(session, test_x[0], "NHWC")
    session.close()
    assert logits.dtype == np.float32  # dequantised
    # int8 against the fp32 network is every layer's quantisation, not a rounding-order difference: the
    # decision must hold (arg-max) and the logits stay within a tenth of their range
    span = reference.max() - reference.min()
    assert np.max(np.abs(logits - reference)) < 0.1 * span
    assert np.mean(logits.argmax(1) == reference.argmax(1)) >= 0.9


def test_batched_sessions(tiny, test_x, reference, tolerance):
    batch = test_x[0][:4]
    ort = open_session("onnxruntime", str(tiny.paths["onnx"]), {})
    assert_fp32_close(ort.run([batch])[0], reference[:4], tolerance[:4], "ORT batched")
    lite = open_session("litert", str(tiny.paths["tflite"]), {"batch_size": 4})
    assert lite.inputs[0]["shape"][1:] == [8, 8, 1]
    assert_fp32_close(lite.run([batch.transpose(0, 2, 3, 1)])[0], reference[:4], tolerance[:4], "LiteRT batched")


@pytest.mark.parametrize(("runtime", "suffix"), [
    ("onnxruntime", ".onnx"), ("litert", ".tflite"), ("tvm", ".so"), ("openvino", ".onnx"),
    ("torch", ".pt2"), ("keras", ".keras"),
])
def test_corrupt_model_file_raises(tmp_path, runtime, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00not a model\xff" * 8)
    with pytest.raises(Exception) as info:  # noqa: PT011 - each framework has its own error type
        open_session(runtime, str(path), {})
    assert str(info.value)


def test_tvm_refuses_a_cross_compiled_archive(tmp_path):
    path = tmp_path / "model.tar"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="cross-compiled"):
        open_session("tvm", str(path), {})


def test_unknown_runtime():
    with pytest.raises(ValueError, match="unknown runtime"):
        open_session("tensorrt", "x.plan", {})
