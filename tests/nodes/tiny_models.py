"""One tiny digits CNN in every format the runtimes read, all sharing the same weights.

Trained for a few epochs in torch, then copied into Keras (NHWC) so that ONNX Runtime, OpenVINO,
TVM, torch, Keras and LiteRT float must all give the same logits; LiteRT int8 comes from the same
Keras model through full-integer quantisation. Used by the backend and runtime-node tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONFIG = {"input_shape": [1, 8, 8], "num_classes": 10, "channels": 8, "layers": 1,
          "batchnorm": False, "dropout": 0.0}


@dataclass
class TinyModels:
    root: Path
    dataset: Path  # .npz in the dataset convention (NCHW float32, int64 labels)
    class_names: list[str]
    paths: dict[str, Path] = field(default_factory=dict)  # format -> file
    meta: dict[str, Any] = field(default_factory=dict)  # torch meta (arch, arch_config, ...)


def digits_npz(path: Path, seed: int = 0) -> tuple[Path, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0 - 0.5)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test, n_val = 300, 150
    np.savez(path, x_train=x[n_test + n_val:], y_train=y[n_test + n_val:],
             x_val=x[n_test:n_test + n_val], y_val=y[n_test:n_test + n_val],
             x_test=x[:n_test], y_test=y[:n_test])
    return path, [str(i) for i in range(10)]


def _train_torch(data: Any, epochs: int = 8) -> Any:
    import torch
    from heiti.nodes.torch_arch import build_cnn

    torch.manual_seed(0)
    model = build_cnn(CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    for _ in range(epochs):
        for start in range(0, len(x), 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[start:start + 64]), y[start:start + 64])
            loss.backward()
            opt.step()
    return model.eval()


def _keras_copy(torch_model: Any) -> Any:
    """The same network in Keras (NHWC), weights copied from torch."""
    import keras

    conv, linear = torch_model[0], torch_model[-1]
    c_out = conv.out_channels
    inputs = keras.Input((8, 8, 1), name="input")
    h = keras.layers.Conv2D(c_out, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, name="dense")(h)
    model = keras.Model(inputs, out)
    w = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    model.get_layer("conv").set_weights([w, conv.bias.detach().numpy()])
    # torch flattens (C, H, W), Keras (H, W, C): reorder the dense rows to match
    lw = linear.weight.detach().numpy().reshape(10, c_out, 4, 4).transpose(2, 3, 1, 0).reshape(-1, 10)
    model.get_layer("dense").set_weights([lw, linear.bias.detach().numpy()])
    return model


def _tflite(model: Any, path: Path, x_train: np.ndarray | None) -> Path:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if x_train is not None:
        sample = x_train[:100].transpose(0, 2, 3, 1)

        def representative():
            for i in range(len(sample)):
                yield [sample[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def compile_tvm(onnx_path: Path, out: Path, batch: int = 1) -> Path:
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={"input": [batch, 1, 8, 8]})
    tvm.compile(mod, target="llvm").export_library(str(out))
    return out


def build_all(root: Path, formats: tuple[str, ...] = ("onnx", "torch", "pt2", "keras", "tflite",
                                                      "tflite_int8", "tvm")) -> TinyModels:
    import torch
    from heiti.nodes.torch_arch import save_model

    torch.set_num_threads(2)
    root.mkdir(parents=True, exist_ok=True)
    dataset, names = digits_npz(root / "digits.npz")
    data = dict(np.load(dataset, allow_pickle=False))
    model = _train_torch(data)
    meta = {"arch": "cnn", "arch_config": CONFIG, "input_shape": CONFIG["input_shape"],
            "class_names": names, "task": "classification", "layout": "NCHW"}
    tiny = TinyModels(root=root, dataset=dataset, class_names=names, meta=meta)
    example = torch.from_numpy(data["x_test"][:1])
    if "onnx" in formats or "tvm" in formats:
        tiny.paths["onnx"] = root / "model.onnx"
        torch.onnx.export(model, (example,), str(tiny.paths["onnx"]), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if "torch" in formats:
        tiny.paths["torch"] = root / "model.pt"
        save_model(model, tiny.paths["torch"], meta)
    if "pt2" in formats:
        tiny.paths["pt2"] = root / "model.pt2"
        torch.export.save(torch.export.export(model, (example,)), str(tiny.paths["pt2"]))
    if {"keras", "tflite", "tflite_int8"} & set(formats):
        keras_model = _keras_copy(model)
        tiny.paths["keras"] = root / "model.keras"
        keras_model.save(tiny.paths["keras"])
        if "tflite" in formats:
            tiny.paths["tflite"] = _tflite(keras_model, root / "model.tflite", None)
        if "tflite_int8" in formats:
            tiny.paths["tflite_int8"] = _tflite(keras_model, root / "model_int8.tflite", data["x_train"])
    if "tvm" in formats:
        tiny.paths["tvm"] = compile_tvm(tiny.paths["onnx"], root / "model.so")
    return tiny


def shared(tmp_path_factory: Any) -> TinyModels:
    """The models built once per test session (in pytest's base temp folder), reused by modules."""
    root = Path(tmp_path_factory.getbasetemp()) / "tiny_models"
    cached = getattr(shared, "_built", None)
    if cached is not None and cached.root == root:
        return cached
    shared._built = build_all(root)  # type: ignore[attr-defined]
    return shared._built  # type: ignore[attr-defined]
