"""Model nodes and training on digits with real torch and Keras; user model files, good and broken."""

from __future__ import annotations

import time

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.nodes.models import ModelFile

from tests.nodes.data_h1 import build, ok, real_registry, run

REGISTRY = real_registry()
DIGITS = ("d", "dataset.digits", {"seed": 0})


def trained(framework: str, epochs: int, **train_params):
    nodes = [DIGITS, ("m", f"model.{framework}_cnn", {}), ("t", f"train.{framework}", {"epochs": epochs, **train_params})]
    edges = [("d", "dataset", "m", "dataset"), ("m", "model", "t", "model"), ("d", "dataset", "t", "dataset")]
    return build(nodes, edges)


def test_torch_cnn_weights_load_safely_and_match_the_dataset(tmp_path):
    import torch
    from heiti.nodes.torch_arch import load_model

    result = ok(run(build([DIGITS, ("m", "model.torch_cnn", {"channels": 8, "layers": 3})],
                          [("d", "dataset", "m", "dataset")]), tmp_path, registry=REGISTRY))
    model = result.outputs["m"]["model"]
    assert model.model_format == "torch" and model.path.suffix == ".pt"
    assert model.meta["arch"] == "cnn" and model.meta["layout"] == "NCHW" and model.meta["input_shape"] == [1, 8, 8]
    state = torch.load(model.path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    module = load_model(model.path)  # from the sidecar alone
    assert module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert model.meta["pipeline"][0]["kind"] == "model.torch_cnn"


def test_train_torch_reports_epochs_and_learns(tmp_path):
    events: list = []
    result = ok(run(trained("torch", 3), tmp_path, registry=REGISTRY, events=events))
    metrics = [e for e in events if e.type == "node_metric" and e.node == "t"]
    names = {e.name for e in metrics}
    assert names == {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert sorted(e.x for e in metrics if e.name == "val_acc") == [1.0, 2.0, 3.0]
    losses = [e.value for e in metrics if e.name == "train_loss"]
    assert losses[-1] < losses[0]
    model = result.outputs["t"]["model"]
    assert model.model_format == "torch" and model.meta["test_accuracy"] > 0.85
    assert [s["kind"] for s in model.meta["pipeline"]] == ["model.torch_cnn", "train.torch"]


def test_train_torch_is_deterministic_with_a_seed(tmp_path):
    import torch

    weights = []
    for name in ("a", "b"):
        result = ok(run(trained("torch", 1), tmp_path, name, executor=Executor(REGISTRY, cache_dir=None)))
        weights.append(torch.load(result.outputs["t"]["model"].path, weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_train_keras_is_deterministic_with_a_seed(tmp_path):
    import keras

    weights = []
    for name in ("a", "b"):
        result = ok(run(trained("keras", 1), tmp_path, name, executor=Executor(REGISTRY, cache_dir=None)))
        weights.append(keras.models.load_model(result.outputs["t"]["model"].path, compile=False).get_weights())
    assert len(weights[0]) == len(weights[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_train_torch_cancels_between_batches(tmp_path):
    executor = Executor(REGISTRY, cache_dir=tmp_path / "cache")

    def stop_on_training(event):
        if event.type == "node_progress" and event.node == "t":
            executor.cancel()

    executor.subscribe(stop_on_training)
    started = time.perf_counter()
    result = run(trained("torch", 200), tmp_path, executor=executor)
    assert result.status == "cancelled" and result.states["t"] == "cancelled"
    assert time.perf_counter() - started < 30


def test_train_keras_reports_epochs_and_learns(tmp_path):
    events: list = []
    result = ok(run(trained("keras", 3), tmp_path, registry=REGISTRY, events=events))
    metrics = [e for e in events if e.type == "node_metric" and e.node == "t"]
    assert {e.name for e in metrics} == {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert sorted(e.x for e in metrics if e.name == "train_acc") == [1.0, 2.0, 3.0]
    model = result.outputs["t"]["model"]
    assert model.model_format == "keras" and model.meta["layout"] == "NHWC"
    assert model.meta["test_accuracy"] > 0.85


def test_train_keras_cancels(tmp_path):
    executor = Executor(REGISTRY, cache_dir=tmp_path / "cache")
    executor.subscribe(lambda e: executor.cancel() if e.type == "node_progress" and e.node == "t" else None)
    result = run(trained("keras", 200), tmp_path, executor=executor)
    assert result.status == "cancelled" and result.states["t"] == "cancelled"


@pytest.mark.heavy
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_digits_reach_95_percent_within_a_minute(tmp_path, framework):
    started = time.perf_counter()
    result = ok(run(trained(framework, 15), tmp_path, registry=REGISTRY))
    seconds = time.perf_counter() - started
    model = result.outputs["t"]["model"]
    print(f"{framework}: test accuracy {model.meta['test_accuracy']:.4f}, training {model.meta['train_time_s']:.1f} s, "
          f"whole graph {seconds:.1f} s")
    assert model.meta["test_accuracy"] >= 0.95
    assert model.meta["train_time_s"] < 60


# --- the user's own model files ------------------------------------------------------------------------
def file_node(tmp_path, path, name="run", **params):
    return run(build([("f", "model.file", {"path": str(path), **params})], []), tmp_path, name, registry=REGISTRY)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A small torch net saved as .onnx (dynamic batch and dynamic H/W) and .pt2, and a Keras net."""
    import keras
    import torch

    folder = tmp_path_factory.mktemp("user_models")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    x = torch.zeros(1, 3, 16, 16)
    torch.onnx.export(net, (x,), str(folder / "batch.onnx"), dynamo=False, input_names=["image"],
                      dynamic_axes={"image": {0: "n"}})
    torch.onnx.export(net, (x,), str(folder / "free.onnx"), dynamo=False, input_names=["image"],
                      dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    torch.export.save(torch.export.export(net, (x,)), str(folder / "net.pt2"))
    inputs = keras.Input((16, 16, 3))
    keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inputs))).save(folder / "net.keras")
    lam = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    keras.Model(inputs, lam).save(folder / "lambda.keras")
    return folder


def test_output_format_comes_from_the_extension():
    for name, fmt in [("a.onnx", "onnx"), ("b.TFLITE", "tflite"), ("c.keras", "keras"), ("d.pt2", "pt2"), ("e.bin", None)]:
        params = ModelFile.Params(path=name)
        assert ModelFile.output_formats(params) == {"model": fmt}


def test_onnx_file_with_dynamic_batch_loads(tmp_path, user_files):
    model = ok(file_node(tmp_path, user_files / "batch.onnx")).outputs["f"]["model"]
    assert model.model_format == "onnx" and model.inputs[0]["shape"] == [None, 3, 16, 16]
    assert model.meta["layout"] == "NCHW" and model.meta["input_shape"] == [3, 16, 16]
    assert model.path.parent == tmp_path / "run" / "nodes" / "f"


def test_dynamic_image_size_asks_for_fix_shape(tmp_path, user_files):
    result = file_node(tmp_path, user_files / "free.onnx")
    assert result.status == "failed"
    assert "dynamic dimensions" in result.errors["f"] and "fix_shape" in result.errors["f"]


def test_fix_shape_is_written_into_the_onnx_file(tmp_path, user_files):
    import onnxruntime as ort

    model = ok(file_node(tmp_path, user_files / "free.onnx", fix_shape="1,3,24,20")).outputs["f"]["model"]
    assert model.inputs[0]["shape"] == [1, 3, 24, 20]
    session = ort.InferenceSession(str(model.path))
    assert session.get_inputs()[0].shape == [1, 3, 24, 20]
    assert session.run(None, {"image": np.zeros((1, 3, 24, 20), np.float32)})[0].shape == (1, 5)


def test_fix_shape_with_the_wrong_rank_or_name(tmp_path, user_files):
    assert "has 3 dims" in file_node(tmp_path, user_files / "free.onnx", "a", fix_shape="1,24,20").errors["f"]
    assert "inputs are image" in file_node(tmp_path, user_files / "free.onnx", "b", fix_shape="x:1,3,4,4").errors["f"]


def test_pt2_and_keras_files_load(tmp_path, user_files):
    pt2 = ok(file_node(tmp_path, user_files / "net.pt2", "p")).outputs["f"]["model"]
    assert pt2.model_format == "pt2" and pt2.inputs[0]["shape"] == [1, 3, 16, 16]
    keras_model = ok(file_node(tmp_path, user_files / "net.keras", "k")).outputs["f"]["model"]
    assert keras_model.model_format == "keras" and keras_model.meta["layout"] == "NHWC"
    assert keras_model.inputs[0]["shape"] == [None, 16, 16, 3]


def test_keras_lambda_is_refused_by_safe_mode(tmp_path, user_files):
    result = file_node(tmp_path, user_files / "lambda.keras")
    assert result.status == "failed" and "safe mode" in result.errors["f"]


@pytest.mark.parametrize("name", ["batch.onnx", "net.pt2", "net.keras"])
def test_truncated_model_files_give_clear_errors(tmp_path, user_files, name):
    data = (user_files / name).read_bytes()
    broken = tmp_path / name
    broken.write_bytes(data[: len(data) // 2])
    result = file_node(tmp_path, broken)
    assert result.status == "failed"
    assert f"{name} is not a valid" in result.errors["f"], result.errors["f"]


def test_garbage_tflite_gives_a_clear_error(tmp_path):
    broken = tmp_path / "model.tflite"
    broken.write_bytes(b"TFL3" + bytes(range(200)))
    result = file_node(tmp_path, broken)
    assert result.status == "failed" and "model.tflite is not a valid tflite model" in result.errors["f"]


def test_missing_or_unsupported_files(tmp_path):
    from heiti.engine.executor import InvalidGraph

    with pytest.raises(InvalidGraph, match="absent.onnx does not exist"):  # refused before anything runs
        file_node(tmp_path, tmp_path / "absent.onnx", "a")
    (tmp_path / "weights.pt").write_bytes(b"x")
    message = file_node(tmp_path, tmp_path / "weights.pt", "b").errors["f"]
    assert "unsupported model file type" in message and ".pt2" in message


# --- a registered architecture with its own loss and batches -------------------------------------------
def test_registered_arch_trains_with_its_own_loss_and_batches(tmp_path):
    """The hook the detector uses: make_batches + loss without "correct" -> losses only, extras reported."""
    from heiti.engine import DatasetHandle, In, ModelArtifact, Node, Out
    from heiti.nodes.torch_arch import register_arch, save_model

    def build_linear(config):
        import torch

        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))

    def mean_pixel_batches(data, split, batch_size, rng):
        import torch

        x = data[f"x_{split}"]
        order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(x[order[start:start + batch_size]])
            yield chunk, chunk.mean(dim=(1, 2, 3))[:, None]

    def mse(model, batch):
        x, target = batch
        error = model(x) - target
        return (error ** 2).mean(), {"count": len(x), "abs_error": float(error.abs().mean())}

    register_arch("test_mean_pixel", build_linear, loss=mse, make_batches=mean_pixel_batches, output_names=["mean"])

    class MeanPixelModel(Node):
        kind = "test.mean_pixel_model"
        inputs = {"dataset": In(DatasetHandle)}
        outputs = {"model": Out(ModelArtifact, format="torch")}

        def run(self, ctx, dataset):
            import torch

            torch.manual_seed(0)
            meta = {"arch": "test_mean_pixel", "arch_config": {}, "input_shape": [1, 8, 8], "layout": "NCHW"}
            save_model(build_linear({}), ctx.workdir / "model.pt", meta)
            return {"model": ModelArtifact(path=ctx.workdir / "model.pt", model_format="torch", meta=meta)}

    registry = real_registry()
    registry.register(MeanPixelModel)
    events: list = []
    graph = build([DIGITS, ("m", "test.mean_pixel_model", {}), ("t", "train.torch", {"epochs": 3, "lr": 0.01}),
                   ("o", "convert.torch_to_onnx", {})],
                  [("d", "dataset", "m", "dataset"), ("m", "model", "t", "model"), ("d", "dataset", "t", "dataset"),
                   ("t", "model", "o", "model")])
    result = ok(run(graph, tmp_path, registry=registry, events=events))
    names = {e.name for e in events if e.type == "node_metric" and e.node == "t"}
    assert names == {"train_loss", "val_loss", "train_abs_error", "val_abs_error"}
    losses = [e.value for e in events if e.type == "node_metric" and e.name == "val_loss"]
    assert losses[-1] < losses[0]
    assert result.outputs["t"]["model"].meta["test_accuracy"] is None
    assert [o["name"] for o in result.outputs["o"]["model"].outputs] == ["mean"]
