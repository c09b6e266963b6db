"""Converters and optimizers on digits models trained here, checked by running the results."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.engine.validate import validate

from tests.nodes.data_h1 import build, litert_run, ok, ort_run, real_registry, run
from tests.tolerance import assert_fp32_close, keras_fp32_atol, onnx_fp32_atol, torch_fp32_atol

REGISTRY = real_registry()

BASE_NODES = [("d", "dataset.digits", {"seed": 0}),
              ("tm", "model.torch_cnn", {}), ("tt", "train.torch", {"epochs": 3}),
              ("km", "model.keras_cnn", {}), ("kt", "train.keras", {"epochs": 3})]
BASE_EDGES = [("d", "dataset", "tm", "dataset"), ("tm", "model", "tt", "model"), ("d", "dataset", "tt", "dataset"),
              ("d", "dataset", "km", "dataset"), ("km", "model", "kt", "model"), ("d", "dataset", "kt", "dataset")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the trained base models are computed once and then restored."""
    return tmp_path_factory.mktemp("cache")


def run_with(cache, tmp_path, nodes, edges, name="run"):
    graph = build(BASE_NODES + nodes, BASE_EDGES + edges)
    return ok(run(graph, tmp_path, name, executor=Executor(REGISTRY, cache_dir=cache)))


def split_of(result):
    with np.load(result.outputs["d"]["dataset"].path, allow_pickle=False) as data:
        return data["x_test"], data["y_test"]


def test_torch_to_onnx_matches_torch(cache, tmp_path):
    import torch
    from heiti.nodes.torch_arch import load_model

    result = run_with(cache, tmp_path, [("o", "convert.torch_to_onnx", {"opset": 17})], [("tt", "model", "o", "model")])
    onnx_model = result.outputs["o"]["model"]
    assert onnx_model.model_format == "onnx" and onnx_model.inputs[0]["shape"] == [1, 1, 8, 8]
    assert onnx_model.meta["convert_time_s"] > 0 and onnx_model.meta["layout"] == "NCHW"
    assert [s["kind"] for s in onnx_model.meta["pipeline"]] == ["model.torch_cnn", "train.torch", "convert.torch_to_onnx"]
    assert not list(onnx_model.path.parent.glob("*.data"))  # a single file
    x, y = split_of(result)
    module = load_model(result.outputs["tt"]["model"].path)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    # the same fp32 maths summed in another order: within the network's fp32 rounding bound
    assert_fp32_close(ort_run(onnx_model.path, x), expected, onnx_fp32_atol(onnx_model.path, x), "ORT vs torch")


def test_torch_to_onnx_dynamic_batch_and_dynamo(cache, tmp_path):
    nodes = [("o", "convert.torch_to_onnx", {"dynamic_batch": True, "exporter": "dynamo", "opset": 18})]
    result = run_with(cache, tmp_path, nodes, [("tt", "model", "o", "model")])
    model = result.outputs["o"]["model"]
    assert model.inputs[0]["shape"][0] is None and model.meta["exporter"] == "dynamo"
    x, _ = split_of(result)
    assert ort_run(model.path, x[:7]).shape == (7, 10)


def test_pt2_to_onnx(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 3)).eval()
    x = torch.rand(1, 1, 8, 8)
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "net.pt2"))
    graph = build([("f", "model.file", {"path": str(tmp_path / "net.pt2")}), ("o", "convert.torch_to_onnx", {})],
                  [("f", "model", "o", "model")])
    result = ok(run(graph, tmp_path, registry=REGISTRY))
    with torch.no_grad():
        expected = net(x).numpy()
    assert_fp32_close(ort_run(result.outputs["o"]["model"].path, x.numpy()), expected, torch_fp32_atol(net, x.numpy()),
                      "ORT vs torch")  # fp32 summation order only


def test_keras_to_tflite_float32_matches_keras(cache, tmp_path):
    import keras

    result = run_with(cache, tmp_path, [("l", "convert.keras_to_tflite", {})], [("kt", "model", "l", "model")])
    lite = result.outputs["l"]["model"]
    assert lite.model_format == "tflite" and lite.inputs[0]["shape"] == [1, 8, 8, 1]
    x, _ = split_of(result)
    x = x[:50].transpose(0, 2, 3, 1)
    net = keras.models.load_model(result.outputs["kt"]["model"].path, safe_mode=True, compile=False)
    assert_fp32_close(litert_run(lite.path, x), net.predict(x, verbose=0), keras_fp32_atol(net, x),
                      "LiteRT vs Keras")  # fp32 summation order only


def test_keras_to_tflite_int8_is_full_integer_and_keeps_accuracy(cache, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    nodes = [("l", "convert.keras_to_tflite", {"quantization": "int8", "representative_samples": 100})]
    result = run_with(cache, tmp_path, nodes, [("kt", "model", "l", "model"), ("d", "dataset", "l", "dataset")])
    lite = result.outputs["l"]["model"]
    assert lite.inputs[0]["dtype"] == "int8" and lite.outputs[0]["dtype"] == "int8"
    assert lite.inputs[0]["quantization"][0] > 0
    interpreter = Interpreter(model_path=str(lite.path))
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in dtypes and np.float32 not in dtypes  # weights and activations are integers
    x, y = split_of(result)
    accuracy = float((litert_run(lite.path, x.transpose(0, 2, 3, 1)).argmax(1) == y).mean())
    assert accuracy >= result.outputs["kt"]["model"].meta["test_accuracy"] - 0.05
    float_size = run_with(cache, tmp_path, [("l", "convert.keras_to_tflite", {})], [("kt", "model", "l", "model")],
                          "f32").outputs["l"]["model"].path.stat().st_size
    assert lite.path.stat().st_size < float_size


def test_keras_to_tflite_int8_without_dataset_says_what_to_connect(cache, tmp_path):
    graph = build(BASE_NODES + [("l", "convert.keras_to_tflite", {"quantization": "int8"})],
                  BASE_EDGES + [("kt", "model", "l", "model")])
    result = run(graph, tmp_path, executor=Executor(REGISTRY, cache_dir=cache))
    assert result.status == "failed" and "connect a dataset" in result.errors["l"]


@pytest.mark.parametrize("quantization", ["float16", "dynamic"])
def test_keras_to_tflite_float16_and_dynamic_run(cache, tmp_path, quantization):
    result = run_with(cache, tmp_path, [("l", "convert.keras_to_tflite", {"quantization": quantization})],
                      [("kt", "model", "l", "model")])
    x, y = split_of(result)
    accuracy = float((litert_run(result.outputs["l"]["model"].path, x.transpose(0, 2, 3, 1)).argmax(1) == y).mean())
    assert accuracy >= result.outputs["kt"]["model"].meta["test_accuracy"] - 0.03


def test_keras_to_onnx_takes_nchw_and_matches_keras(cache, tmp_path):
    import keras

    result = run_with(cache, tmp_path, [("o", "convert.keras_to_onnx", {})], [("kt", "model", "o", "model")])
    model = result.outputs["o"]["model"]
    assert model.inputs[0]["shape"] == [1, 1, 8, 8] and model.meta["layout"] == "NCHW"
    x, _ = split_of(result)
    net = keras.models.load_model(result.outputs["kt"]["model"].path, safe_mode=True, compile=False)
    nhwc = x[:40].transpose(0, 2, 3, 1)
    assert_fp32_close(ort_run(model.path, x[:40]), net.predict(nhwc, verbose=0), keras_fp32_atol(net, nhwc),
                      "ORT vs Keras")  # fp32 summation order only


def test_onnx_static_quantisation_is_qdq_and_keeps_accuracy(cache, tmp_path):
    import onnx

    nodes = [("o", "convert.torch_to_onnx", {}), ("q", "optimize.onnx_quantize", {"calibration_samples": 100})]
    edges = [("tt", "model", "o", "model"), ("o", "model", "q", "model"), ("d", "dataset", "q", "dataset")]
    result = run_with(cache, tmp_path, nodes, edges)
    quantised = result.outputs["q"]["model"]
    ops = {n.op_type for n in onnx.load(str(quantised.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x, y = split_of(result)
    accuracy = float((ort_run(quantised.path, x).argmax(1) == y).mean())
    assert accuracy >= result.outputs["tt"]["model"].meta["test_accuracy"] - 0.03
    assert quantised.path.stat().st_size < result.outputs["o"]["model"].path.stat().st_size


def test_onnx_dynamic_quantisation_runs_and_static_needs_a_dataset(cache, tmp_path):
    nodes = [("o", "convert.torch_to_onnx", {}), ("q", "optimize.onnx_quantize", {"mode": "dynamic"})]
    result = run_with(cache, tmp_path, nodes, [("tt", "model", "o", "model"), ("o", "model", "q", "model")])
    x, y = split_of(result)
    assert float((ort_run(result.outputs["q"]["model"].path, x).argmax(1) == y).mean()) > 0.8
    graph = build(BASE_NODES + [("o", "convert.torch_to_onnx", {}), ("q", "optimize.onnx_quantize", {})],
                  BASE_EDGES + [("tt", "model", "o", "model"), ("o", "model", "q", "model")])
    failed = run(graph, tmp_path, "static", executor=Executor(REGISTRY, cache_dir=cache))
    assert failed.status == "failed" and "connect a dataset" in failed.errors["q"]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_torch_prune_zeroes_the_requested_share(cache, tmp_path, scope):
    import torch

    nodes = [("p", "optimize.torch_prune", {"sparsity": 0.6, "scope": scope})]
    result = run_with(cache, tmp_path, nodes, [("tt", "model", "p", "model")])
    pruned = result.outputs["p"]["model"]
    state = torch.load(pruned.path, weights_only=True)
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in state)  # made permanent
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    share = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(share - 0.6) < 0.01 and abs(pruned.meta["sparsity"] - share) < 1e-3
    if scope == "layer":
        assert all(abs(float((w == 0).float().mean()) - 0.6) < 0.02 for w in weights)


def test_validation_proposes_keras_to_onnx_for_tvm():
    graph = build([("d", "dataset.digits", {}), ("km", "model.keras_cnn", {}), ("tvm", "compile.tvm", {})],
                  [("d", "dataset", "km", "dataset"), ("km", "model", "tvm", "model")])
    problems = [p for p in validate(graph, REGISTRY).problems if p.code == "format_mismatch"]
    assert len(problems) == 1
    assert "`keras` → `onnx`" in problems[0].suggestion and "convert.keras_to_onnx" in problems[0].suggestion
