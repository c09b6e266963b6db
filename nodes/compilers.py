"""Compilers: ONNX/TFLite -> Apache TVM (Relax) library, ONNX -> OpenVINO IR.

compile.tvm builds for the host CPU (auto-detected, exported as a .so that the TVM runtime loads
with `tvm.runtime.load_module` + `relax.VirtualMachine`) or for a device CPU (aarch64, armv7,
riscv64, a TVM tag, or a target dict as JSON), exported as a .tar of object files to link on or
for the device. Optional MetaSchedule tuning keeps its database in a folder reused across runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from heiti.engine import In, ModelArtifact, Node, NodeError, Out
from heiti.engine.files import file_sha256
from heiti.nodes.models import step_meta
from heiti.nodes.optimize_onnx import import_hint, import_simplified, shapes_for
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: named cross targets -> TVM target dicts (the options TVM's own tags use for these CPUs)
CROSS_TARGETS: dict[str, dict[str, Any]] = {
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
    "armv7": {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"]},
    "riscv64": {"kind": "llvm", "mtriple": "riscv64-unknown-linux-gnu", "mabi": "lp64d",
                "mattr": ["+m", "+a", "+f", "+d", "+c"]},
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def resolve_target(name: str) -> tuple[Any, bool]:
    """(tvm Target, is_cross) for "host", a named cross target, a TVM tag, or a JSON target dict."""
    import tvm

    if name == "host":
        import psutil

        cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1  # MetaSchedule needs num-cores
        return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                  "num-cores": int(cores)}), False
    if name in CROSS_TARGETS:
        return tvm.target.Target(CROSS_TARGETS[name]), True
    try:
        spec: Any = json.loads(name) if name.lstrip().startswith("{") else name
        target = tvm.target.Target(spec)
    except Exception as err:  # noqa: BLE001 - TVM raises several error types for a bad target
        raise NodeError(f"TVM does not understand target {name!r}: {str(err)[:200]}",
                        f"use host, {', '.join(CROSS_TARGETS)}, a tag like raspberry-pi/4b-aarch64, or a JSON dict") from err
    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
    host_triple = tvm.target.codegen.llvm_get_default_target_triple() if hasattr(
        tvm.target.codegen, "llvm_get_default_target_triple") else "x86_64"
    cross = bool(triple) and triple.split("-")[0] != host_triple.split("-")[0]
    return target, cross


def _fixed_shapes(model: ModelArtifact, batch: int) -> dict[str, list[int]]:
    """Input shapes with a free batch set to `batch`; other free dims need model.file's fix_shape."""
    shapes: dict[str, list[int]] = {}
    for item in model.inputs:
        shape = list(item["shape"])
        if shape and shape[0] is None:
            shape[0] = batch
        if any(d is None for d in shape):
            raise NodeError(f"input {item['name']!r} has dynamic dimensions {item['shape']}; TVM needs fixed shapes",
                            "set fix_shape on the Model file node, e.g. 1,3,224,224")
        shapes[item["name"]] = [int(d) for d in shape]
    return shapes


class TVMCompile(Node):
    """Compile an ONNX or TFLite model with Apache TVM (Relax) for a CPU target.

    target: "host" (this machine's CPU, auto-detected), "aarch64", "armv7", "riscv64", a TVM tag
    (e.g. raspberry-pi/4b-aarch64) or a target dict as JSON. Host builds are a .so; cross builds a
    .tar of object files for the device. tune_trials > 0 runs MetaSchedule (minutes) and keeps the
    tuning database in `tuning_db` (default ~/.cache/heiti/tvm-tuning/<model hash>) for next runs.
    """

    kind = "compile.tvm"
    title = "TVM compile"
    category = "Compilers"

    class Params(_Params):
        target: str = Field("host", description="host, aarch64, armv7, riscv64, a TVM tag or a JSON target dict")
        opt_level: int = Field(3, ge=0, le=3, description="TVM optimisation level")
        batch: int = Field(1, ge=1, description="batch size used where the model's batch is dynamic")
        tune_trials: int = Field(0, ge=0, description="MetaSchedule trials; 0 = no tuning")
        fix_shape: str = Field("", description="fixed input shape(s), e.g. 1,3,640,640: the ONNX model is simplified "
                                               "with onnxslim first (also done when the plain import fails)")
        tuning_db: str = Field("", description="tuning database folder (default ~/.cache/heiti/tvm-tuning/<model hash>)")
        retune: bool = Field(False, description="tune again even when the database already holds enough records")
        tune_builder: Literal["in_process", "local"] = Field(
            "in_process", description="build tuning candidates in this process (fast) or in LocalBuilder worker "
                                      "processes (isolated, but each batch pays TVM's ~30 s start-up)")

        @field_validator("target")
        @classmethod
        def _target(cls, value: str) -> str:
            value = value.strip()
            if not value:
                raise ValueError("target is empty; use host, aarch64, armv7, riscv64, a TVM tag or a JSON dict")
            if value.startswith("{"):
                try:
                    json.loads(value)
                except json.JSONDecodeError as err:
                    raise ValueError(f"target looks like JSON but does not parse: {err}") from None
            return value

    inputs = {"model": In(ModelArtifact, formats={"onnx", "tflite"})}
    outputs = {"model": Out(ModelArtifact, format="tvm")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        import tvm

        t0 = time.perf_counter()
        p = self.params
        target, cross = resolve_target(p.target)
        shapes = shapes_for(model, p.batch, p.fix_shape, _fixed_shapes)
        ctx.progress(0.1, f"importing {model.model_format}")
        mod = import_simplified(ctx, model, p.fix_shape, shapes, lambda path: self._import(
            model.model_copy(update={"path": path}), shapes, raw=True), "TVM")
        tuned = 0
        if p.tune_trials > 0 and cross:
            raise NodeError(f"tuning measures candidates on the CPU it builds for; {p.target} is not this machine",
                            "set tune_trials to 0 for cross targets, or tune on the device")
        if p.tune_trials > 0:
            mod, tuned = self._tune(ctx, mod, target, model)
        ctx.progress(0.6, "compiling")
        with tvm.transform.PassContext(opt_level=p.opt_level):
            executable = tvm.compile(mod, target=target)
        path = ctx.workdir / ("model.tar" if cross else "model.so")
        ctx.progress(0.9, "exporting")
        executable.export_library(str(path))
        seconds = time.perf_counter() - t0
        inputs = [{"name": item["name"], "shape": shapes[item["name"]], "dtype": item.get("dtype", "float32"),
                   **({"quantization": item["quantization"]} if "quantization" in item else {})}
                  for item in model.inputs]
        meta = step_meta(model, ctx, self.kind, seconds, compile_time_s=round(seconds, 3), convert_time_s=round(seconds, 3),
                         target=_json_safe(dict(target.export())), target_name=p.target, cross=cross,
                         opt_level=p.opt_level, tuned_trials=tuned, source_format=model.model_format)
        ctx.log(f"TVM {'cross ' if cross else ''}build for {p.target} in {seconds:.2f} s -> {path.name}")
        return {"model": ModelArtifact(path=path, model_format="tvm", inputs=inputs, outputs=model.outputs, meta=meta)}

    def _import(self, model: ModelArtifact, shapes: dict[str, list[int]], raw: bool = False) -> Any:
        try:
            if model.model_format == "onnx":
                import onnx
                from tvm.relax.frontend.onnx import from_onnx

                dtypes = {i["name"]: i.get("dtype", "float32") for i in model.inputs}
                return from_onnx(onnx.load(str(model.path)), shape_dict=shapes, dtype_dict=dtypes)
            import tflite
            from tvm.relax.frontend.tflite import from_tflite

            buffer = Path(model.path).read_bytes()
            tfl = tflite.Model.GetRootAsModel(buffer, 0)
            dtypes = {i["name"]: i.get("dtype", "float32") for i in model.inputs}
            return from_tflite(tfl, shape_dict=shapes, dtype_dict=dtypes)
        except NodeError:
            raise
        except Exception as err:  # noqa: BLE001 - frontends raise anything on unsupported operators
            if raw:  # import_simplified retries and words the error
                raise
            text = f"{type(err).__name__}: {str(err)[:300]}"
            raise NodeError(f"TVM cannot import this {model.model_format} model: {text}",
                            import_hint(text, Path(model.path))) from err

    def _tune(self, ctx: Any, mod: Any, target: Any, model: ModelArtifact) -> tuple[Any, int]:
        import tvm
        from tvm import relax
        from tvm.s_tir import meta_schedule as ms

        p = self.params
        folder = Path(p.tuning_db).expanduser() if p.tuning_db else (
            Path.home() / ".cache" / "heiti" / "tvm-tuning" / file_sha256(Path(model.path))[:16])
        folder.mkdir(parents=True, exist_ok=True)
        with target:
            mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                            relax.transform.CanonicalizeBindings(),
                                            relax.pipeline.zero_pipeline()])(mod)
        tasks = ms.relax_integration.extract_tasks(mod, target)
        database = ms.database.JSONDatabase(work_dir=str(folder))
        untuned = [t.task_name for t in tasks
                   if not database.get_top_k(database.commit_workload(t.dispatched[0]), 1)]
        if not untuned and not p.retune:
            ctx.log(f"reusing the tuning records of all {len(tasks)} tasks from {folder}")
            trials = 0
        else:
            import importlib.util

            cost_model = "xgb" if importlib.util.find_spec("xgboost") else "random"
            per_task = max(1, -(-p.tune_trials // max(1, len(tasks))))
            builder = (ms.builder.LocalBuilder(timeout_sec=120) if p.tune_builder == "local"
                       else in_process_builder())
            ctx.progress(0.2, f"tuning {len(tasks)} tasks ({p.tune_trials} trials, {cost_model} cost model)")
            ctx.log(f"MetaSchedule: {p.tune_trials} trials over {len(tasks)} tasks, database {folder}")
            with target, tvm.transform.PassContext(opt_level=p.opt_level):
                ms.relax_integration.tune_relax(
                    mod, params={}, target=target, work_dir=str(folder), max_trials_global=p.tune_trials,
                    max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task), builder=builder,
                    runner=ms.runner.LocalRunner(timeout_sec=60), cost_model=cost_model)
            trials = p.tune_trials
        with target, tvm.transform.PassContext(opt_level=p.opt_level):
            mod = relax.transform.MetaScheduleApplyDatabase(str(folder))(mod)
        return mod, trials


def in_process_builder() -> Any:
    """A MetaSchedule builder compiling candidates in this process.

    LocalBuilder starts a fresh worker pool for every batch and each worker imports TVM's tensor
    intrinsics (30 s or more on a busy 2-core machine), which dwarfs building a small model's
    candidates (a few seconds). The price: no per-candidate timeout and no crash isolation.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    results.append(BuilderResult(default_export(default_build(item.mod, item.target, item.params)), None))
                except Exception as err:  # noqa: BLE001 - a failed candidate is a result, not a crash
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


class OpenVINOCompile(Node):
    """Convert an ONNX model to OpenVINO IR (.xml + .bin); the precision hint is kept for the runtime."""

    kind = "compile.openvino"
    title = "OpenVINO IR"
    category = "Compilers"

    class Params(_Params):
        precision: Literal["f32", "bf16", "f16"] = Field(
            "f32", description="inference precision hint for the runtime (f32 gives exact comparisons)")
        compress_to_fp16: bool = Field(False, description="store weights as fp16 in the .bin")
        fix_shape: str = Field("", description="fixed input shape(s), e.g. 1,3,640,640: the ONNX model is simplified "
                                               "with onnxslim first (also done when the plain import fails)")

    inputs = {"model": In(ModelArtifact, formats={"onnx"})}
    outputs = {"model": Out(ModelArtifact, format="openvino")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        import openvino as ov

        t0 = time.perf_counter()
        p = self.params
        converted = import_simplified(ctx, model, p.fix_shape, shapes_for(model, 1, p.fix_shape),
                                      lambda path: ov.convert_model(str(path)), "OpenVINO")
        path = ctx.workdir / "model.xml"
        ov.save_model(converted, str(path), compress_to_fp16=p.compress_to_fp16)

        def describe(ports: Any) -> list[dict[str, Any]]:
            out = []
            for port in ports:
                shape = port.get_partial_shape()
                dims = [d.get_length() if d.is_static else None for d in shape]
                out.append({"name": port.get_any_name(), "shape": dims, "dtype": port.get_element_type().to_dtype().name})
            return out

        seconds = time.perf_counter() - t0
        meta = step_meta(model, ctx, self.kind, seconds, convert_time_s=round(seconds, 4),
                         precision_hint=p.precision, ov_config={"INFERENCE_PRECISION_HINT": p.precision},
                         weights_file=path.with_suffix(".bin").name)
        return {"model": ModelArtifact(path=path, model_format="openvino", inputs=describe(converted.inputs),
                                       outputs=describe(converted.outputs), meta=meta)}
