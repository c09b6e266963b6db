"""Converters and optimizers: torch/Keras -> ONNX/TFLite, ONNX quantisation, torch pruning.

Each node declares the formats it accepts and the one it makes, so that validation can propose a
chain of them (the format graph is built from these declarations). Each one records its own time
in meta.convert_time_s and appends itself to meta.pipeline, keeping the upstream meta.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from heiti.engine import DatasetHandle, In, ModelArtifact, Node, NodeError, Out
from heiti.nodes.keras_env import import_keras, load_keras
from heiti.nodes.keras_onnx import tf_function_to_onnx
from heiti.nodes.model_io import onnx_io, tflite_io
from heiti.nodes.models import step_meta
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy loads when a converter runs, not when the kinds are listed
    import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Params(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


def _load_split(dataset: DatasetHandle, split: str, count: int, seed: int, layout: str) -> np.ndarray:
    """Up to `count` samples of one split (seeded choice), float32, in the model's layout."""
    import numpy as np

    x = dataset.load_split(split).x
    if len(x) == 0:
        raise NodeError(f"the dataset's {split} split is empty; calibration needs samples")
    if count and count < len(x):
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]
    x = x.astype(np.float32)
    return x.transpose(0, 2, 3, 1) if layout == "NHWC" and x.ndim == 4 else x


def _artifact(model: ModelArtifact, ctx: Any, kind: str, t0: float, path: Path, fmt: str,
              inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], **meta: Any) -> ModelArtifact:
    seconds = time.perf_counter() - t0
    full = step_meta(model, ctx, kind, seconds, convert_time_s=round(seconds, 4), **meta)
    ctx.log(f"{kind}: {fmt} model written in {seconds:.2f} s ({path.stat().st_size} bytes)")
    return ModelArtifact(path=path, model_format=fmt, inputs=inputs, outputs=outputs, meta=full)


def _image_shape(model: ModelArtifact) -> list[int]:
    shape = model.meta.input_shape
    if not shape:
        raise NodeError("the model's meta has no input_shape; it cannot be exported without an example input")
    return [int(v) for v in shape]


# --- torch -> ONNX -----------------------------------------------------------------------------------
class TorchToOnnx(Node):
    """Export a torch model (state_dict + arch, or a torch.export .pt2) to a single ONNX file."""

    kind = "convert.torch_to_onnx"
    warm_imports = ("torch", "onnx")
    title = "Export torch to ONNX"
    category = "Converters"

    class Params(_Params):
        opset: int = Field(17, ge=11, le=23, description="ONNX opset version")
        dynamic_batch: bool = Field(False, description="leave the batch dimension free (fixed 1 otherwise)")
        exporter: Literal["auto", "torchscript", "dynamo"] = Field(
            "auto", description="auto: TorchScript tracing for torch models (fast), dynamo for .pt2")

    inputs = {"model": In(ModelArtifact, formats={"torch", "pt2"})}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        import onnx
        import torch
        from heiti.nodes.torch_arch import get_arch, load_model

        t0 = time.perf_counter()
        p = self.params
        path = ctx.workdir / "model.onnx"
        if model.model_format == "pt2":
            program = torch.export.load(str(model.path))
            module: Any = program
            example = tuple(torch.zeros([d or 1 for d in i["shape"]], dtype=getattr(torch, i["dtype"]))
                            for i in model.inputs)
            input_names = [i["name"] for i in model.inputs]
            output_names = None
            exporter = "dynamo"
            if p.dynamic_batch:
                ctx.warn("dynamic_batch is ignored for .pt2: the exported program fixes its own shapes")
        else:
            module = load_model(model.path, model.meta)
            example = (torch.zeros([1, *_image_shape(model)]),)
            input_names = [model.meta.input_name or "input"]
            output_names = get_arch(model.meta.arch or "").output_names
            exporter = "torchscript" if p.exporter == "auto" else p.exporter
        ctx.progress(0.2, f"exporting with {exporter}")
        kwargs: dict[str, Any] = {"input_names": input_names, "opset_version": p.opset}
        if output_names:
            kwargs["output_names"] = output_names
        if exporter == "torchscript":
            if p.dynamic_batch:
                kwargs["dynamic_axes"] = {n: {0: "batch"} for n in input_names + list(output_names or [])}
            torch.onnx.export(module, example, str(path), dynamo=False, **kwargs)
        else:
            if p.dynamic_batch and not isinstance(module, torch.export.ExportedProgram):
                kwargs["dynamic_shapes"] = tuple({0: torch.export.Dim("batch")} for _ in example)
            torch.onnx.export(module, example, str(path), dynamo=True, external_data=False, verbose=False, **kwargs)
        onnx_model = onnx.load(str(path))
        onnx.checker.check_model(onnx_model)
        inputs, outputs = onnx_io(onnx_model)
        art = _artifact(model, ctx, self.kind, t0, path, "onnx", inputs, outputs, layout=(model.meta.layout or "NCHW"),
                        input_name=inputs[0]["name"], opset=p.opset, exporter=exporter)
        return {"model": art}


# --- Keras -> TFLite ----------------------------------------------------------------------------------
def fixed_batch_keras(model: Any, batch: int) -> Any:
    """A functional wrapper with a fixed batch size: TFLite then needs no SHAPE ops for Flatten."""
    _tf, keras = import_keras()
    inputs = [keras.Input(batch_shape=(batch, *t.shape[1:]), name=t.name, dtype=t.dtype) for t in model.inputs]
    return keras.Model(inputs, model(inputs[0] if len(inputs) == 1 else inputs))


class KerasToTFLite(Node):
    """Convert a Keras model to TensorFlow Lite: float32, float16, dynamic-range or full int8.

    int8 is full-integer quantisation (int8 weights, activations, inputs and outputs) calibrated
    on a representative set drawn from the dataset's train split: it needs the dataset input.
    """

    kind = "convert.keras_to_tflite"
    #: TensorFlow's TFLite converter is loaded on first use after import_keras (nodes.keras_env): ahead, here
    warm_imports = ("heiti.nodes.keras_env:import_keras", "tensorflow.lite.python.lite")
    title = "Convert Keras to TFLite"
    category = "Converters"

    class Params(_Params):
        quantization: Literal["float32", "float16", "dynamic", "int8"] = Field("float32")
        representative_samples: int = Field(200, ge=1, le=100_000, description="train samples used to calibrate int8")
        batch: int = Field(1, ge=1, description="fixed batch size of the TFLite model")
        seed: int = Field(0, description="seed of the representative sample choice")

    inputs = {"model": In(ModelArtifact, formats={"keras"}),
              "dataset": In(DatasetHandle, formats={"classification", "detection"}, required=False,
                            description="needed for int8: calibration samples from its train split")}
    outputs = {"model": Out(ModelArtifact, format="tflite")}

    def run(self, ctx: Any, model: ModelArtifact, dataset: DatasetHandle | None = None) -> dict[str, Any]:
        tf, _keras = import_keras()
        t0 = time.perf_counter()
        p = self.params
        if p.quantization == "int8" and dataset is None:
            raise NodeError("int8 quantisation needs calibration data: connect a dataset to input 'dataset'",
                            "or choose quantization float32, float16 or dynamic")
        net = load_keras(model.path)
        converter = tf.lite.TFLiteConverter.from_keras_model(fixed_batch_keras(net, p.batch))
        if p.quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if p.quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if p.quantization == "int8":
            assert dataset is not None
            samples = _load_split(dataset, "train", p.representative_samples, p.seed, (model.meta.layout or "NHWC"))
            if len(samples) < p.batch:
                raise NodeError(f"int8 calibration needs at least one batch of {p.batch} samples; the train split "
                                f"gives {len(samples)}")

            def representative() -> Any:
                for start in range(0, len(samples) - p.batch + 1, p.batch):
                    ctx.check_cancelled()
                    yield [samples[start:start + p.batch]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        ctx.progress(0.3, f"converting ({p.quantization})")
        path = ctx.workdir / "model.tflite"
        with contextlib.redirect_stdout(io.StringIO()):  # TF prints the traced signature
            path.write_bytes(converter.convert())
        inputs, outputs, interpreter = tflite_io(path)
        interpreter.allocate_tensors()
        art = _artifact(model, ctx, self.kind, t0, path, "tflite", inputs, outputs, quantization=p.quantization,
                        layout=(model.meta.layout or "NHWC"), input_name=inputs[0]["name"])
        return {"model": art}


# --- Keras -> ONNX ------------------------------------------------------------------------------------
class KerasToOnnx(Node):
    """Convert a Keras model to ONNX with tf2onnx (traced as a tf.function with a fixed signature)."""

    kind = "convert.keras_to_onnx"
    warm_imports = ("heiti.nodes.keras_env:import_keras", "tf2onnx", "onnx")
    title = "Export Keras to ONNX"
    category = "Converters"

    class Params(_Params):
        opset: int = Field(17, ge=11, le=18, description="ONNX opset version")
        nchw_input: bool = Field(True, description="make the ONNX model take NCHW input (a transpose is added inside)")
        batch: int = Field(1, ge=1, description="fixed batch size")

    inputs = {"model": In(ModelArtifact, formats={"keras"})}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        import onnx

        tf, _keras = import_keras()
        t0 = time.perf_counter()
        p = self.params
        net = load_keras(model.path)
        if len(net.inputs) != 1:
            raise NodeError(f"Keras to ONNX handles single-input models; this one has {len(net.inputs)} inputs")
        name = model.meta.input_name or "input"
        spec = tf.TensorSpec([p.batch, *net.inputs[0].shape[1:]], net.inputs[0].dtype, name=name)
        # autograph would rewrite the lambda (no control flow in it) before tracing: 0.2-0.5 s for nothing
        function = tf.function(lambda x: net(x, training=False), input_signature=[spec], autograph=False)
        path = ctx.workdir / "model.onnx"
        ctx.progress(0.3, "tracing and converting")
        rank4 = len(spec.shape) == 4
        loaded = time.perf_counter()
        phases: dict[str, float] = {}
        proto = tf_function_to_onnx(function, spec, p.opset, [f"{name}:0"] if p.nchw_input and rank4 else None,
                                    phases=phases)
        converted = time.perf_counter()
        onnx.save(proto, str(path))
        onnx.checker.check_model(proto)
        ctx.log("keras_to_onnx phases: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in {"load": loaded - t0, **phases, "save+check": time.perf_counter() - converted}.items()),
            level="debug")
        inputs, outputs = onnx_io(proto)
        layout = "NCHW" if p.nchw_input and rank4 else (model.meta.layout or "NHWC")
        art = _artifact(model, ctx, self.kind, t0, path, "onnx", inputs, outputs, layout=layout,
                        input_name=inputs[0]["name"], opset=p.opset)
        return {"model": art}


# --- ONNX quantisation -------------------------------------------------------------------------------
class OnnxQuantize(Node):
    """Quantise an ONNX model with ONNX Runtime: static QDQ int8 calibrated on the dataset, or dynamic.

    Static QDQ models import into TVM and OpenVINO; dynamic ones use integer operators
    (ConvInteger, MatInteger) that only ONNX Runtime runs.
    """

    kind = "optimize.onnx_quantize"
    warm_imports = ("onnxruntime.quantization",)
    title = "Quantise ONNX (int8)"
    category = "Optimizers"
    version = 2  # 2: param calibrate_method renamed calibration_method, like calibration_samples

    class Params(_Params):
        mode: Literal["static", "dynamic"] = Field("static", description="static QDQ (needs a dataset) or dynamic")
        calibration_samples: int = Field(200, ge=1, le=100_000, description="train samples used to calibrate")
        calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
            "minmax", description="how activation ranges are chosen from the calibration samples")
        activation_type: Literal["int8", "uint8"] = Field("uint8", description="type of quantised activations")
        per_channel: bool = Field(False, description="per-channel weight scales")
        reduce_range: bool = Field(False, description="7-bit weights: avoids the 16-bit saturation of u8s8 "
                                   "kernels on x86 CPUs without VNNI (AVX2 only), at a little precision")
        seed: int = 0

    @classmethod
    def migrate(cls, params: dict[str, Any], from_version: int) -> dict[str, Any]:
        if from_version < 2 and "calibrate_method" in params and "calibration_method" not in params:
            params = dict(params)
            params["calibration_method"] = params.pop("calibrate_method")
        return params

    inputs = {"model": In(ModelArtifact, formats={"onnx"}),
              "dataset": In(DatasetHandle, formats={"classification", "detection"}, required=False,
                            description="calibration samples for static mode")}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx: Any, model: ModelArtifact, dataset: DatasetHandle | None = None) -> dict[str, Any]:
        import onnx
        from onnxruntime import quantization as q

        t0 = time.perf_counter()
        p = self.params
        path = ctx.workdir / "model.onnx"
        prepared = ctx.workdir / "prepared.onnx"
        try:
            q.quant_pre_process(str(model.path), str(prepared), skip_symbolic_shape=True)
        except Exception as err:  # noqa: BLE001 - pre-processing is an optional improvement
            ctx.warn(f"quantisation pre-processing skipped: {err}")
            prepared = Path(model.path)
        if p.mode == "dynamic":
            q.quantize_dynamic(str(prepared), str(path), weight_type=q.QuantType.QUInt8, per_channel=p.per_channel,
                               reduce_range=p.reduce_range)
        else:
            if dataset is None:
                raise NodeError("static quantisation needs calibration data: connect a dataset to input 'dataset'",
                                "or set mode to dynamic")
            samples = _load_split(dataset, "train", p.calibration_samples, p.seed, (model.meta.layout or "NCHW"))
            method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                      "percentile": q.CalibrationMethod.Percentile}[p.calibration_method]
            activation = q.QuantType.QInt8 if p.activation_type == "int8" else q.QuantType.QUInt8
            ctx.progress(0.2, f"calibrating on {len(samples)} samples")
            q.quantize_static(str(prepared), str(path), _Calibration(model, samples, ctx),
                              quant_format=q.QuantFormat.QDQ, activation_type=activation,
                              weight_type=q.QuantType.QInt8, per_channel=p.per_channel, calibrate_method=method,
                              reduce_range=p.reduce_range)
        if prepared != Path(model.path):
            prepared.unlink(missing_ok=True)
        quantised = onnx.load(str(path))
        inputs, outputs = onnx_io(quantised)
        art = _artifact(model, ctx, self.kind, t0, path, "onnx", inputs, outputs,
                        quantization=f"{p.mode}-int8" if p.mode == "dynamic" else f"qdq-{p.activation_type}")
        return {"model": art}


class _Calibration:
    """onnxruntime CalibrationDataReader over prepared samples, in the model's fixed batch (else 1)."""

    def __init__(self, model: ModelArtifact, samples: np.ndarray, ctx: Any) -> None:
        first = model.inputs[0] if model.inputs else {}
        self.name = first.get("name") or model.meta.input_name or "input"
        shape = first.get("shape") or [None]
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
        if len(samples) < self.batch:
            raise NodeError(f"calibration needs at least one batch of {self.batch} samples; got {len(samples)}")
        self.samples = samples
        self.ctx = ctx
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.ctx.check_cancelled()
        if self.index + self.batch > len(self.samples):
            return None
        chunk = self.samples[self.index:self.index + self.batch]
        self.index += self.batch
        return {self.name: chunk}

    def rewind(self) -> None:
        self.index = 0


# --- torch pruning -----------------------------------------------------------------------------------
class TorchPrune(Node):
    """Zero the smallest weights (L1 unstructured) of every Conv and Linear layer, made permanent."""

    kind = "optimize.torch_prune"
    warm_imports = ("torch",)
    title = "Prune torch weights"
    category = "Optimizers"

    class Params(_Params):
        sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="share of weights set to zero")
        scope: Literal["layer", "global"] = Field("layer", description="per layer, or one threshold for all layers")

    inputs = {"model": In(ModelArtifact, formats={"torch"})}
    outputs = {"model": Out(ModelArtifact, format="torch")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        from heiti.nodes.torch_arch import load_model, save_model
        from torch import nn
        from torch.nn.utils import prune

        t0 = time.perf_counter()
        p = self.params
        module = load_model(model.path, model.meta)
        targets = [(m, "weight") for m in module.modules() if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)]
        if not targets:
            raise NodeError("the model has no Conv or Linear layer to prune")
        if p.scope == "global":
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=p.sparsity)
        else:
            for layer, name in targets:
                prune.l1_unstructured(layer, name, amount=p.sparsity)
        for layer, name in targets:
            prune.remove(layer, name)
        zeros = sum(int((layer.weight == 0).sum()) for layer, _ in targets)
        total = sum(layer.weight.numel() for layer, _ in targets)
        path = ctx.workdir / "model.pt"
        seconds = time.perf_counter() - t0
        meta = step_meta(model, ctx, self.kind, seconds, convert_time_s=round(seconds, 4),
                         sparsity=round(zeros / total, 4))
        save_model(module, path, meta)
        ctx.log(f"pruned {zeros} of {total} weights ({zeros / total:.1%})")
        return {"model": model.model_copy(update={"path": path, "meta": meta})}
