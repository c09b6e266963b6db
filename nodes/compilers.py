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

from heiti.engine import Cancelled, In, ModelArtifact, Node, NodeError, Out
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
    model_config = ConfigDict(defer_build=True, extra="forbid")


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
    .tar of object files for the device.

    schedule "default" gives every fused TIR function a CPU schedule without measuring (parallel
    outer loops, vectorised and register-tiled inner loops, NHWC convolutions; see docs/tvm.md);
    "none" keeps TVM's unscheduled loops. tune_trials / tune_minutes > 0 run MetaSchedule (xgboost
    cost model) starting from the default schedules; records go to a database per target shared by
    all models (`tuning_db`, default ~/.cache/heiti/tvm-tuning/<target>), so a re-compile or a model
    sharing layers reuses them.

    int8: a quantised model (QDQ ONNX, full-int8 TFLite) gets integer conv2d/matmul kernels (int32
    accumulation, exact requantisation; vpmaddwd on AVX2) instead of float maths on dequantised
    values; "auto" does so on AVX2 targets, where it was measured faster (heiti.nodes.tvm_int8).
    """

    kind = "compile.tvm"
    warm_imports = ("tvm", "heiti.nodes.tvm_schedule")
    title = "TVM compile"
    category = "Compilers"
    version = 2  # 2: default CPU schedule (cached version-1 builds were unscheduled); params only added

    class Params(_Params):
        target: str = Field("host", description="host, aarch64, armv7, riscv64, a TVM tag or a JSON target dict")
        opt_level: int = Field(3, ge=0, le=3, description="TVM optimisation level")
        batch: int = Field(1, ge=1, description="batch size used where the model's batch is dynamic")
        schedule: Literal["default", "none"] = Field(
            "default", description="default: a CPU schedule for every fused function without measuring "
                                   "(parallel, vectorised, tiled); none: TVM's naive single-thread loops")
        layout: Literal["NHWC", "NCHW"] = Field("NHWC", description="layout convolutions are computed in "
                                                                     "(NHWC vectorises over channels)")
        tune_trials: int = Field(0, ge=0, description="MetaSchedule trials; 0 = no trial limit (tune_minutes decides)")
        tune_minutes: float = Field(0.0, ge=0, description="tuning time budget in minutes; 0 = no time limit. "
                                                           "Tuning runs when either this or tune_trials is > 0")
        fix_shape: str = Field("", description="fixed input shape(s), e.g. 1,3,640,640: the ONNX model is simplified "
                                               "with onnxslim first (also done when the plain import fails)")
        tuning_db: str = Field("", description="tuning database folder, shared by models (default "
                                               "~/.cache/heiti/tvm-tuning/<target>)")
        retune: bool = Field(False, description="tune again even when the database already holds enough records")
        int8: Literal["auto", "integer", "float"] = Field(
            "auto", description="quantised models (QDQ ONNX, int8 TFLite): integer = conv2d/matmul as int32-"
                                "accumulating integer kernels; float = float maths on dequantised values; auto = "
                                "integer where it pays on the target (see docs/tvm.md)")
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

        t0 = time.perf_counter()
        p = self.params
        target, cross = resolve_target(p.target)
        shapes = shapes_for(model, p.batch, p.fix_shape, _fixed_shapes)
        ctx.progress(0.1, f"importing {model.model_format}")
        mod = import_simplified(ctx, model, p.fix_shape, shapes, lambda path: self._import(
            model.model_copy(update={"path": path}), shapes, raw=True), "TVM")
        tuning = p.tune_trials > 0 or p.tune_minutes > 0
        if tuning and cross:
            raise NodeError(f"tuning measures candidates on the CPU it builds for; {p.target} is not this machine",
                            "set tune_trials and tune_minutes to 0 for cross targets, or tune on the device")
        mod, int8_info = self._int8(ctx, mod, target)
        inputs = [{"name": item["name"], "shape": shapes[item["name"]], "dtype": item.get("dtype", "float32"),
                   **({"quantization": item["quantization"]} if "quantization" in item else {})}
                  for item in model.inputs]
        t_build = time.perf_counter()
        try:
            executable, info, fallback = self._schedule_and_build(ctx, mod, target, tuning)
            if fallback is not None:
                executable = self._keep_faster(ctx, target, executable, fallback, info, inputs)
        except Exception as err:  # noqa: BLE001 - a TVM failure in tuning or in a tuned kernel
            if not tuning or isinstance(err, Cancelled | NodeError):
                raise
            # MetaSchedule can pick a candidate that TVM then fails to lower; the default schedules
            # still give a working, fast module, so the user gets one with the reason logged
            ctx.warn(f"tuning or the tuned build failed in TVM ({str(err)[:300]}); building with the default "
                     "schedules instead")
            t_build = time.perf_counter()
            executable, info, _ = self._schedule_and_build(ctx, mod, target, False)
            info["tuning_failed"] = str(err)[:300]
        path = ctx.workdir / ("model.tar" if cross else "model.so")
        ctx.progress(0.9, "exporting")
        executable.export_library(str(path))
        info["build_s"] = round(time.perf_counter() - t_build, 3)
        seconds = time.perf_counter() - t0
        tune_s = float(info.get("tuning", {}).get("seconds", 0.0))
        compile_s = round(seconds - tune_s, 3)  # tuning time is reported on its own
        meta = step_meta(model, ctx, self.kind, seconds, compile_time_s=compile_s, convert_time_s=compile_s,
                         tune_time_s=round(tune_s, 3), tuned=bool(info.get("tuning")),
                         target=_json_safe(dict(target.export())), target_name=p.target, cross=cross,
                         opt_level=p.opt_level, tuned_trials=int(info.get("tuning", {}).get("trials", 0)),
                         source_format=model.model_format, tvm_schedule=_json_safe(info),
                         **({"tvm_int8": _json_safe(int8_info)} if int8_info else {}))
        ctx.log(f"TVM {'cross ' if cross else ''}build for {p.target} in {seconds:.2f} s "
                f"({'tuned ' + format(tune_s, '.0f') + ' s, ' if tune_s else ''}schedule {p.schedule}) -> {path.name}")
        return {"model": ModelArtifact(path=path, model_format="tvm", inputs=inputs, outputs=model.outputs, meta=meta)}

    def _int8(self, ctx: Any, mod: Any, target: Any) -> tuple[Any, dict[str, Any]]:
        """Integer conv2d/matmul kernels for a quantised model (heiti.nodes.tvm_int8); {} if not quantised."""
        from heiti.nodes import tvm_int8

        if not tvm_int8.is_quantized(mod):
            return mod, {}
        mode, why = tvm_int8.choose(self.params.int8, target)
        info: dict[str, Any] = {"mode": mode, "requested": self.params.int8, "why": why}
        if mode == "integer":
            ctx.progress(0.15, "integer kernels for the quantised convolutions")
            mod, stats = tvm_int8.rewrite(mod)
            info.update(stats.as_dict())
            ctx.log(f"int8: {stats.conv2d} conv2d and {stats.matmul} matmul as integer kernels "
                    f"({stats.requantized} requantised in integers)")
        else:
            ctx.log(f"int8: float maths on dequantised values ({why})")
        return mod, info

    def _schedule_and_build(self, ctx: Any, mod: Any, target: Any,
                            tuning: bool) -> tuple[Any, dict[str, Any], Any | None]:
        """The executable, what was done, and (when tuning) the default-scheduled module to duel."""
        import tvm

        scheduled, info, fallback = self._schedule(ctx, mod, target, tuning)
        ctx.progress(0.7, "compiling")
        with tvm.transform.PassContext(opt_level=self.params.opt_level):
            return tvm.compile(scheduled, target=target), info, fallback

    def _keep_faster(self, ctx: Any, target: Any, tuned: Any, fallback: Any, info: dict[str, Any],
                     inputs: list[dict[str, Any]]) -> Any:
        """Build the default-scheduled model too and keep whichever runs faster here (tvm_duel)."""
        import tvm
        from heiti.nodes import tvm_duel

        ctx.progress(0.8, "checking the tuned build against the default schedules")
        with tvm.transform.PassContext(opt_level=self.params.opt_level):
            default = tvm.compile(fallback, target=target)
        result = tvm_duel.duel(tuned, default, tvm_duel.sample_inputs(inputs), lambda: ctx.cancelled)
        info.setdefault("tuning", {})["duel"] = result.as_dict()
        ctx.log(f"tuned build {result.tuned_ms:.3f} ms, default schedules {result.default_ms:.3f} ms per call: "
                f"keeping the {'tuned' if result.keep_tuned else 'default'} one")
        if not result.keep_tuned:
            info["tuning"]["kept_default"] = True
            ctx.warn("the tuned build ran slower than the default schedules on this machine; kept the default one")
            return default
        return tuned

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

    def _schedule(self, ctx: Any, mod: Any, target: Any, tuning: bool) -> tuple[Any, dict[str, Any], Any | None]:
        """Fused TIR with a schedule per function: default (heuristic), tuned records first when
        tuning; then also the default-scheduled module (for `_keep_faster`)."""
        from heiti.nodes import tvm_pipeline
        from heiti.nodes import tvm_schedule as ts

        p = self.params
        info: dict[str, Any] = {"schedule": p.schedule, "layout": p.layout, "version": ts.SCHEDULE_VERSION}
        if p.schedule == "none" and not tuning:
            return mod, info, None  # tvm.compile's default pipeline: legalize, fuse, no schedule
        ctx.progress(0.2, "preparing (layout, constants, fusion)")
        leftovers = tvm_pipeline.LeftoverStats()
        mod = ts.prepare(mod, target, p.layout, stats=leftovers)
        database, stats = ts.default_schedule_database(mod, target)
        info.update(tasks=stats.tasks, scheduled=stats.scheduled, schedule_s=round(stats.seconds, 3),
                    rewritten=leftovers.as_dict())
        if stats.failed:
            info["unscheduled"] = stats.failed[:20]
            ctx.log(f"no default schedule for {len(stats.failed)} function(s): {', '.join(stats.failed[:5])}", "warning")
        if tuning:
            folder = Path(p.tuning_db).expanduser() if p.tuning_db else ts.default_tuning_dir(target)
            ctx.progress(0.3, f"tuning {stats.tasks} tasks ({ts.cost_model_name()} cost model) into {folder}")

            def progress(elapsed: float, best_ms: float, message: str) -> None:
                ctx.metric("tvm_tuning_best_ms", best_ms, elapsed)
                if p.tune_minutes > 0:
                    ctx.progress(0.3 + 0.35 * min(1.0, elapsed / (p.tune_minutes * 60)), f"tuning: {message}")

            result = ts.tune(mod, target, folder, trials=p.tune_trials, minutes=p.tune_minutes, retune=p.retune,
                             builder="local" if p.tune_builder == "local" else "in_process",
                             on_progress=progress, cancelled=lambda: ctx.cancelled)
            ctx.log(("reused the tuning records of all tasks in " if result.reused else
                     f"tuned {result.trials} trials in {result.seconds:.0f} s into ") + str(folder))
            info["tuning"] = {"seconds": round(result.seconds, 3), "trials": result.trials, "reused": result.reused,
                              "cost_model": result.cost_model, "database": str(folder),
                              "estimated_ms": result.best_ms, "estimated_default_ms": result.default_ms,
                              "history": result.history[-200:]}
            default_mod = ts.apply_database(mod, target, database, p.opt_level)
            return ts.apply_database(mod, target, ts.tuned_database(folder, database), p.opt_level), info, default_mod
        if p.schedule == "none":
            return mod, info, None
        return ts.apply_database(mod, target, database, p.opt_level), info, None


class OpenVINOCompile(Node):
    """Convert an ONNX model to OpenVINO IR (.xml + .bin); the precision hint is kept for the runtime."""

    kind = "compile.openvino"
    warm_imports = ("openvino",)
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
