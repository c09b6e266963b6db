"""Model nodes: small CNNs built in code for a dataset, and the user's own model files.

A model node only creates (untrained) weights or checks a file; training lives in nodes/train.py.
Every ModelArtifact carries in `meta` (a `ModelMeta`) what later nodes need without opening the
file: task, class_names, layout (the layout the model expects), input_shape, and a `pipeline` list
of the steps that made it (node, kind, seconds). `step_meta` is the one place that list grows.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from heiti.engine import DatasetHandle, In, ModelArtifact, Node, NodeError, Out
from heiti.engine.payloads import ModelMeta, PipelineStep
from pydantic import BaseModel, ConfigDict, Field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Params(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


def step_meta(model: ModelArtifact | None, ctx: Any, kind: str, seconds: float, **updates: Any) -> ModelMeta:
    """Upstream meta carried forward, updated, with this step appended to its pipeline.

    convert_time_s / compile_time_s describe only the step that sets them, so they are dropped from
    the upstream copy; the per-step seconds stay in the pipeline list.
    """
    meta = model.meta.as_dict() if model is not None else {}
    for own in ("convert_time_s", "compile_time_s"):  # times of one step are not inherited
        meta.pop(own, None)
    meta.update(updates)
    step = PipelineStep(node=ctx.node_id, kind=kind, seconds=round(float(seconds), 4))
    meta["pipeline"] = [*meta.get("pipeline", []), step.model_dump()]
    return ModelMeta.model_validate(meta)


def dataset_meta(dataset: DatasetHandle, layout: str) -> dict[str, Any]:
    return {"task": dataset.task, "class_names": list(dataset.class_names), "layout": layout,
            "input_shape": list(dataset.input_shape)}


def _require_images(dataset: DatasetHandle) -> tuple[int, int, int]:
    if dataset.task != "classification" or len(dataset.input_shape) != 3:
        raise NodeError(f"a CNN needs a classification dataset of C x H x W images; got task {dataset.task!r} "
                        f"with samples of shape {dataset.input_shape}")
    c, h, w = (int(v) for v in dataset.input_shape)
    return c, h, w


class _CNNParams(_Params):
    channels: int = Field(16, ge=1, le=512, description="filters of the first conv block (doubled per block)")
    layers: int = Field(2, ge=1, le=8, description="number of conv blocks")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before the classifier")
    batchnorm: bool = Field(True, description="batch normalisation after each convolution")
    seed: int = Field(0, description="seed of the initial weights")


def _cnn_config(dataset: DatasetHandle, p: _CNNParams) -> dict[str, Any]:
    """The architecture config both CNN kinds build from (one plan: torch_arch.cnn_plan)."""
    return {"input_shape": list(_require_images(dataset)), "num_classes": len(dataset.class_names),
            "channels": p.channels, "layers": p.layers, "dropout": p.dropout, "batchnorm": p.batchnorm}


# --- torch --------------------------------------------------------------------------------------------
class TorchCNN(Node):
    """A small PyTorch CNN sized from the dataset: conv blocks, max-pooling, a linear classifier."""

    kind = "model.torch_cnn"
    title = "PyTorch CNN"
    category = "Models"
    Params = _CNNParams
    inputs = {"dataset": In(DatasetHandle, formats={"classification"})}
    outputs = {"model": Out(ModelArtifact, format="torch")}

    def run(self, ctx: Any, dataset: DatasetHandle) -> dict[str, Any]:
        import torch
        from heiti.nodes.torch_arch import build_cnn, save_model

        t0 = time.perf_counter()
        c, h, w = _require_images(dataset)
        p = self.params
        config = _cnn_config(dataset, p)
        torch.manual_seed(p.seed)
        module = build_cnn(config)
        meta = dataset_meta(dataset, "NCHW") | {"arch": "cnn", "arch_config": config, "input_name": "input",
                                                 "trainable_params": sum(t.numel() for t in module.parameters())}
        path = ctx.workdir / "model.pt"
        save_model(module, path, meta)
        meta = step_meta(None, ctx, self.kind, time.perf_counter() - t0, **meta)
        ctx.log(f"torch CNN with {meta.trainable_params} parameters")
        return {"model": ModelArtifact(
            path=path, model_format="torch", meta=meta,
            inputs=[{"name": "input", "shape": [1, c, h, w], "dtype": "float32"}],
            outputs=[{"name": "logits", "shape": [1, len(dataset.class_names)], "dtype": "float32"}])}


# --- keras --------------------------------------------------------------------------------------------
def build_keras_cnn(config: dict[str, Any]) -> Any:
    """The Keras twin of torch_arch.build_cnn, NHWC; outputs logits."""
    from heiti.nodes.keras_env import import_keras
    from heiti.nodes.torch_arch import cnn_plan

    _tf, keras = import_keras()
    plan = cnn_plan(config)
    c, h, w = config["input_shape"]
    inputs = keras.Input(shape=(h, w, c), name="input")
    x = inputs
    for width, pool in zip(plan["widths"], plan["pools"], strict=True):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not config["batchnorm"])(x)
        if config["batchnorm"]:
            x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        x = keras.layers.ReLU()(x)
        if pool:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x) if plan["head"] == "flatten" else keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(config["dropout"])(x)
    outputs = keras.layers.Dense(config["num_classes"], name="logits")(x)
    return keras.Model(inputs, outputs, name="heiti_cnn")


class KerasCNN(Node):
    """A small Keras CNN sized from the dataset (input NHWC: the dataset's C,H,W transposed)."""

    kind = "model.keras_cnn"
    title = "Keras CNN"
    category = "Models"
    Params = _CNNParams
    inputs = {"dataset": In(DatasetHandle, formats={"classification"})}
    outputs = {"model": Out(ModelArtifact, format="keras")}

    def run(self, ctx: Any, dataset: DatasetHandle) -> dict[str, Any]:
        from heiti.nodes.keras_env import import_keras

        _tf, keras = import_keras()
        t0 = time.perf_counter()
        c, h, w = _require_images(dataset)
        p = self.params
        config = _cnn_config(dataset, p)
        keras.utils.set_random_seed(p.seed)
        model = build_keras_cnn(config)
        path = ctx.workdir / "model.keras"
        model.save(path)
        meta = dataset_meta(dataset, "NHWC") | {"arch_config": config, "input_name": "input",
                                                 "trainable_params": int(model.count_params())}
        meta = step_meta(None, ctx, self.kind, time.perf_counter() - t0, **meta)
        return {"model": ModelArtifact(
            path=path, model_format="keras", meta=meta,
            inputs=[{"name": "input", "shape": [None, h, w, c], "dtype": "float32"}],
            outputs=[{"name": "logits", "shape": [None, len(dataset.class_names)], "dtype": "float32"}])}


# --- the user's own file ------------------------------------------------------------------------------
FORMAT_BY_SUFFIX = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras", ".pt2": "pt2"}


def parse_fix_shape(text: str, names: list[str]) -> dict[str, list[int]]:
    """"1,3,224,224" (single input) or "a:1,3,224,224; b:1,10" -> {input name: shape}."""
    text = text.strip()
    if not text:
        return {}
    shapes: dict[str, list[int]] = {}
    try:
        for i, part in enumerate(p for p in text.split(";") if p.strip()):
            name, _, dims = part.rpartition(":")
            name = name.strip() or (names[i] if i < len(names) else "")
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise NodeError(f"fix_shape {text!r} is not a list of integers", "write e.g. 1,3,224,224 or input:1,3,224,224") from None
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise NodeError(f"fix_shape names input {unknown[0]!r}, but the model's inputs are {', '.join(names)}")
    if any(d <= 0 for dims in shapes.values() for d in dims):
        raise NodeError(f"fix_shape {text!r} must hold positive sizes")
    return shapes


def _dynamic_message(path: Path, dynamic: dict[str, list[Any]]) -> NodeError:
    name, shape = next(iter(dynamic.items()))
    example = ",".join(str(d) if isinstance(d, int) and d > 0 else ("1" if i == 0 else "224") for i, d in enumerate(shape))
    return NodeError(f"{path.name}: input {name!r} has dynamic dimensions {shape}; Heiti needs fixed image sizes",
                     f"set param fix_shape, e.g. \"{example}\"")


def guess_layout(shape: list[Any], default: str) -> str:
    if len(shape) != 4:
        return default
    small = {1, 3, 4}
    if shape[1] in small and shape[3] not in small:
        return "NCHW"
    if shape[3] in small and shape[1] not in small:
        return "NHWC"
    return default


def _check_dims(path: Path, inputs: list[dict[str, Any]], fixed: dict[str, list[int]]) -> None:
    """Raise when a non-batch dimension is unknown and no fix_shape covers it."""
    dynamic = {i["name"]: i["shape"] for i in inputs
               if i["name"] not in fixed and any(d is None for d in i["shape"][1:])}
    if dynamic:
        raise _dynamic_message(path, dynamic)
    for item in inputs:
        if item["name"] in fixed and len(fixed[item["name"]]) != len(item["shape"]):
            raise NodeError(f"fix_shape for {item['name']!r} has {len(fixed[item['name']])} dims; the input has "
                            f"{len(item['shape'])} ({item['shape']})")


def model_source(value: str) -> Path:
    """The model file a path param names: a path, or package:<module>/<file> (a file a wheel ships)."""
    from heiti.engine.package_files import is_package_path, package_file

    if is_package_path(value):
        try:
            return package_file(value)
        except ValueError as err:
            raise NodeError(str(err)) from None
    return Path(value).expanduser()


def check_task_outputs(task: str, outputs: list[dict[str, Any]], name: str) -> None:
    """A classification model whose known output shape is no class vector fails here, before any run."""
    from heiti.nodes.runtimes.outputs import NONE_HINT, classification_output_problem

    problem = classification_output_problem(outputs) if task == "classification" else None
    if problem:
        raise NodeError(f"{name}: {problem}", NONE_HINT)


class ModelFile(Node):
    """The user's own model: .onnx, .tflite, .keras or .pt2 (torch.export), checked on load.

    The format comes from the file extension. ONNX is checked with onnx.checker, TFLite by
    allocating its tensors, Keras with safe_mode (no arbitrary code), .pt2 with torch.export.load.
    A model whose input sizes are unknown (dynamic dimensions other than the batch) needs
    `fix_shape`; it is written into .onnx/.keras/.pt2 files and recorded for .tflite.
    """

    kind = "model.file"
    title = "Model file"
    category = "Models"
    path_params = ("path",)

    class Params(_Params):
        path: str = Field("", description="model file: .onnx, .tflite, .keras or .pt2; package:<module>/<file> "
                                          "names a file an installed Python package ships")
        fix_shape: str = Field("", description="fixed input shape(s) for models with dynamic dims, e.g. 1,3,224,224")
        task: Literal["classification", "detection", "none"] = Field(
            "classification", description="what the model does; none = no quality metrics (latency, resources "
                                          "and output agreement only), for outputs Heiti cannot score")
        layout: Literal["auto", "NCHW", "NHWC"] = Field("auto", description="layout of the image input")
        class_names: list[str] = Field(default_factory=list, description="class names in output order")

    outputs = {"model": Out(ModelArtifact)}
    #: what loading each format imports (the run's head start makes it early: engine.head_start)
    FORMAT_IMPORTS = {"onnx": ("onnx",), "tflite": ("ai_edge_litert.interpreter",),
                      "keras": ("heiti.nodes.keras_env:import_keras",), "pt2": ("torch",)}

    @classmethod
    def warm_up_imports(cls, params: BaseModel | None, wired: frozenset[str] = frozenset()) -> tuple[str, ...]:
        fmt = cls.output_formats(params)["model"]
        return cls.FORMAT_IMPORTS.get(fmt or "", ())

    @classmethod
    def output_formats(cls, params: BaseModel | None, input_formats: dict[str, str | None] | None = None
                       ) -> dict[str, str | None]:
        path = str(getattr(params, "path", "") or "")
        return {"model": FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())}

    @classmethod
    def file_problems(cls, params: BaseModel, base: Path | None) -> list[tuple[str, str]]:
        """A classification model whose declared output is no class vector, found by `heiti validate`:
        .onnx and .tflite outputs are read from the file (nodes.output_probe, no runtime); .keras and
        .pt2 need their framework to load, so they are checked when the node runs."""
        from heiti.engine.paths import resolve
        from heiti.nodes.output_probe import declared_outputs
        from heiti.nodes.runtimes.outputs import NONE_HINT, classification_output_problem

        if getattr(params, "task", "") != "classification" or not getattr(params, "path", ""):
            return []
        source = resolve(params.path, base)
        try:
            outputs = declared_outputs(source)
        except Exception:  # noqa: BLE001 - a file its parser refuses: the run says what is wrong with it
            return []
        problem = classification_output_problem(outputs) if outputs is not None else None
        return [("path", f"{source.name}: {problem} ({NONE_HINT})")] if problem else []

    def run(self, ctx: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        source = model_source(self.params.path)
        fmt = FORMAT_BY_SUFFIX.get(source.suffix.lower())
        if fmt is None:
            hint = ("a .pt state_dict needs its code: save it with torch.export.save as .pt2, or export ONNX"
                    if source.suffix.lower() in (".pt", ".pth") else "use .onnx, .tflite, .keras or .pt2")
            raise NodeError(f"unsupported model file type {source.suffix or '(none)'!r}: {source.name}", hint)
        if not source.is_file():
            raise NodeError(f"model file not found: {self.params.path!r}")
        target = ctx.workdir / f"model{source.suffix.lower()}"
        loader = {"onnx": self._onnx, "tflite": self._tflite, "keras": self._keras, "pt2": self._pt2}[fmt]
        try:
            inputs, outputs, extra = loader(source, target)
        except NodeError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure to load means a bad file
            raise NodeError(f"{source.name} is not a valid {fmt} model: {type(err).__name__}: {str(err)[:300]}",
                            "check that the file is complete and saved by a recent framework") from err
        default = "NHWC" if fmt in ("tflite", "keras") else "NCHW"
        layout = self.params.layout if self.params.layout != "auto" else guess_layout(inputs[0]["shape"], default)
        meta = {"task": self.params.task, "class_names": list(self.params.class_names), "layout": layout,
                "input_name": inputs[0]["name"], "source": str(source), **extra}
        check_task_outputs(self.params.task, outputs, source.name)
        shape = inputs[0]["shape"]
        if len(shape) == 4:
            meta["input_shape"] = shape[1:] if layout == "NCHW" else [shape[3], shape[1], shape[2]]
        meta = step_meta(None, ctx, self.kind, time.perf_counter() - t0, **meta)
        ctx.log(f"{fmt} model {source.name}: inputs {inputs}, outputs {outputs}")
        return {"model": ModelArtifact(path=target, model_format=fmt, inputs=inputs, outputs=outputs, meta=meta)}

    # each loader checks the file, writes the (possibly shape-fixed) copy to target, returns io
    def _onnx(self, source: Path, target: Path) -> tuple[list, list, dict]:
        import onnx
        from heiti.nodes.model_io import onnx_io

        model = onnx.load(str(source))
        onnx.checker.check_model(model)
        inputs, outputs = onnx_io(model)
        fixed = parse_fix_shape(self.params.fix_shape, [i["name"] for i in inputs])
        _check_dims(source, inputs, fixed)
        if fixed:
            graph_inputs = {i.name: i for i in model.graph.input}
            for name, dims in fixed.items():
                for dim, value in zip(graph_inputs[name].type.tensor_type.shape.dim, dims, strict=True):
                    dim.dim_value = value
            del model.graph.value_info[:]
            model = onnx.shape_inference.infer_shapes(model)
            onnx.checker.check_model(model)
            inputs, outputs = onnx_io(model)
        onnx.save(model, str(target))
        return inputs, outputs, {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)}

    def _tflite(self, source: Path, target: Path) -> tuple[list, list, dict]:
        from heiti.nodes.model_io import tflite_io

        shutil.copyfile(source, target)
        inputs, outputs, interpreter = tflite_io(target)
        fixed = parse_fix_shape(self.params.fix_shape, [i["name"] for i in inputs])
        _check_dims(source, inputs, fixed)
        for detail, item in zip(interpreter.get_input_details(), inputs, strict=True):
            if item["name"] in fixed:
                interpreter.resize_tensor_input(detail["index"], fixed[item["name"]])
                item["shape"] = fixed[item["name"]]
        interpreter.allocate_tensors()
        return inputs, outputs, {"fixed_shapes": fixed} if fixed else {}

    def _keras(self, source: Path, target: Path) -> tuple[list, list, dict]:
        from heiti.nodes.keras_env import import_keras, load_keras

        _tf, keras = import_keras()
        try:
            model = load_keras(source)
        except ValueError as err:
            if "safe_mode" in str(err) or "lambda" in str(err).lower():
                raise NodeError(f"{source.name} holds code (a Lambda layer) that safe mode refuses to load",
                                "rewrite the Lambda as a registered custom layer, or export to ONNX/TFLite") from err
            raise

        def describe(tensors: list[Any]) -> list[dict[str, Any]]:
            return [{"name": t.name, "shape": [None if d is None else int(d) for d in t.shape],
                     "dtype": str(t.dtype).replace("<dtype: '", "").rstrip("'>")} for t in tensors]

        inputs = describe(model.inputs)
        fixed = parse_fix_shape(self.params.fix_shape, [i["name"] for i in inputs])
        _check_dims(source, inputs, fixed)
        if fixed:
            new_inputs = [keras.Input(batch_shape=fixed.get(i["name"], i["shape"]), name=i["name"]) for i in inputs]
            model = keras.Model(new_inputs, model(new_inputs[0] if len(new_inputs) == 1 else new_inputs))
            inputs = describe(model.inputs)
            model.save(target)
        else:  # the file loaded as it is: the same bytes go on (and the next node finds them loaded)
            shutil.copyfile(source, target)
        return inputs, describe(model.outputs), {}

    def _pt2(self, source: Path, target: Path) -> tuple[list, list, dict]:
        import torch

        program = torch.export.load(str(source))
        inputs, outputs = pt2_io(program)
        fixed = parse_fix_shape(self.params.fix_shape, [i["name"] for i in inputs])
        _check_dims(source, inputs, fixed)
        if fixed:
            examples = tuple(torch.zeros(fixed.get(i["name"], i["shape"]), dtype=getattr(torch, i["dtype"])) for i in inputs)
            program = torch.export.export(program.module(), examples)
            inputs, outputs = pt2_io(program)
        torch.export.save(program, str(target))
        return inputs, outputs, {}


def pt2_io(program: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs/outputs of an ExportedProgram from its placeholder metadata (SymInt dims -> None)."""
    import torch

    user_inputs = set(program.graph_signature.user_inputs)

    def describe(node: Any, name: str) -> dict[str, Any]:
        val = node.meta.get("val")
        shape = [int(d) if isinstance(d, int) else None for d in getattr(val, "shape", [])]
        dtype = str(getattr(val, "dtype", torch.float32)).replace("torch.", "")
        return {"name": name, "shape": shape, "dtype": dtype}

    inputs = [describe(n, n.name) for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    outputs = []
    for node in program.graph.nodes:
        if node.op == "output":
            values = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
            outputs = [describe(v, f"output{i}") for i, v in enumerate(values) if hasattr(v, "meta")]
    return inputs, outputs
