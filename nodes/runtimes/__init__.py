"""Runtime nodes: run a model on a dataset split with one framework, and measure it.

One node kind per framework (runtime.onnxruntime, .litert, .tvm, .openvino, .torch, .keras), all
sharing `RuntimeNode.run`: load the split, open a session (in process, or on a device through
nodes.devices.targets), prepare every input, time the loop (nodes.runtimes.loop), then compute quality and
write `measurements.json`, copied to `<run>/measurements/<node>.json` by `publish`.

A runtime is one class: it declares the model formats it runs, its back-end session class, the
module whose presence means the framework is installed, the distributions named in the
environment section of measurements and the editor colours of its formats. Every table that lists
runtimes (back-ends, a device's HELLO, framework versions, editor colours) is derived from the
registered classes by `runtime_classes`, so a plug-in runtime is one class in one module.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from heiti.engine.context import Cancelled, RunContext
from heiti.engine.node import In, Node, NodeError, Out
from heiti.engine.payloads import DatasetHandle, Measurements, ModelArtifact, TargetHandle
from heiti.nodes.runtimes.batching import check_shape, load_split, split_batches, to_layout, unbatch
from heiti.nodes.runtimes.session import detection_quality, device_series, open_session, summary
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # listing the kinds imports neither numpy nor the measuring machinery
    import numpy as np
    from heiti.engine.measurements import MeasurementsFile

#: the runtime kinds live in this module; its submodules (loop, back-ends, agreement) need not load for listing
NODE_MODULES: tuple[str, ...] = ()
NS_PER_MS = 1e6


class RuntimeParams(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    warmup: int = Field(10, ge=0, description="untimed calls before measuring (after the cold first call)")
    max_samples: int = Field(0, ge=0, description="samples of the split to run; 0 = all of them")
    split: Literal["test", "val", "train"] = Field("test", description="dataset split to run")
    batch_size: int = Field(1, ge=1, description="samples per call; the last batch is padded")
    threads: int = Field(0, ge=0, description="threads for the runtime; 0 = its default")
    sample_period_s: float = Field(0.25, ge=0.01, le=10.0,
                                   description="period of CPU/memory sampling (shorter periods disturb the timing more)")
    label: str = Field("", description="name in reports and tables; empty = the node id")
    repeat: int = Field(1, ge=1, le=100_000, description="timed passes over the split (quality from the first)")
    duration_s: float = Field(0.0, ge=0.0, le=86_400.0, description="keep cycling the split until this many "
                              "seconds have passed (after the repeat passes); 0 = no minimum time")
    drift_tolerance: float = Field(0.10, gt=0.0, le=10.0, description="warn when the last window's median latency "
                                   "differs from the first's by more than this share (0.1 = 10 %)")
    ray_resources: dict[str, float] = Field(
        default_factory=dict, description="with --ray: Ray resources this measurement needs, e.g. {\"board-a\": 1}, "
        "so it runs on that board's Ray node (docs/scaling.md)")


class RuntimeNode(Node):
    """Base of the runtime node kinds: a subclass declares everything Heiti needs to know of it."""

    category = "Runtimes"
    #: it takes turns itself when runtimes are timed in turns (heiti run --interleave; engine.turns)
    takes_turns = True
    #: the runtime's name: in measurements, reports, a device's HELLO and `open_session`
    runtime: ClassVar[str] = ""
    #: model formats it runs; the `model` input accepts these (unless the class sets its own inputs)
    formats: ClassVar[tuple[str, ...]] = ()
    #: "module:Class" of its back-end session, called as Class(model_path, options)
    session: ClassVar[str] = ""
    #: top-level module whose presence means the framework is installed (looked up, never imported)
    probe: ClassVar[str] = ""
    #: distributions whose versions describe it in the environment section of measurements
    dists: ClassVar[tuple[str, ...]] = ()
    #: editor colours ("#rrggbb") of the model formats this runtime stands for
    colours: ClassVar[dict[str, str]] = {}
    exclusive = True  # measures: runs alone, so parallel nodes never disturb its timings
    #: the input layout its models most often take: the split is prepared ahead in it (nodes.runtimes.ahead)
    likely_layout: ClassVar[str] = "NCHW"
    Params = RuntimeParams
    outputs = {"measurements": Out(Measurements, description="latency, resources and quality")}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.formats and "inputs" not in cls.__dict__:
            cls.inputs = RuntimeNode.ports(set(cls.formats))

    @classmethod
    def available(cls) -> bool:
        """Whether the framework is installed here, without importing it."""
        if not cls.probe:
            return True
        try:
            return importlib.util.find_spec(cls.probe) is not None
        except (ImportError, ValueError):
            return False

    @classmethod
    def ports(cls, formats: set[str]) -> dict[str, In]:
        return {
            "model": In(ModelArtifact, formats=formats),
            "dataset": In(DatasetHandle, description="data to run: the test split by default"),
            "target": In(TargetHandle, required=False, description="a device; in process when unwired"),
        }

    def session_options(self) -> dict[str, Any]:
        """Runtime-specific options for the session, from this node's params."""
        return {}

    @classmethod
    def warm_up_imports(cls, params: BaseModel | None, wired: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """The measurement loop, and the framework unless a device runs the model."""
        loop = ("heiti.nodes.runtimes.measure",)
        if "target" in wired or not cls.available():
            return loop
        return (*loop, cls.session.split(":")[0], *cls.warm_imports)

    @classmethod
    def prepare_ahead(cls, params: RuntimeParams, inputs: dict[str, Any]) -> None:
        """While the node waits for its model, in the worker that will run it: read the split and
        lay it out as the model most likely wants it (nodes.runtimes.ahead); `run` takes it."""
        from heiti.nodes.runtimes import ahead

        dataset = inputs.get("dataset")
        if not isinstance(dataset, DatasetHandle):
            return
        have = dataset.layout or "NCHW"
        x, y = load_split(dataset, params.split, params.max_samples)
        if x.ndim == 4:
            x, have = to_layout(x, have, cls.likely_layout), cls.likely_layout
        ahead.hold(dataset, params.split, params.max_samples, x, y, have)
        from heiti.nodes.runtimes.measure import ready_for_quality

        ready_for_quality(y)

    # --- running ---------------------------------------------------------------------------------
    def run(self, ctx: RunContext, model: ModelArtifact, dataset: DatasetHandle,
            target: TargetHandle | None = None) -> dict[str, Any]:
        from heiti.nodes.runtimes.modelfacts import model_gzip_bytes_soon

        model_path = Path(model.path)
        if not model_path.exists():
            raise NodeError(f"model file {model_path} does not exist", "re-run the node that makes it")
        try:  # with --interleave the turn is taken once everything is ready to time (in `_measure`)
            gzip_bytes = model_gzip_bytes_soon(model_path)  # beside the loading; waited for before timing
            try:
                record = self._load_and_measure(ctx, model, dataset, target, gzip_bytes)
            finally:
                gzip_bytes_wait(gzip_bytes)  # never left running past the node, even when it fails
            path = ctx.workdir / "measurements.json"
            record.save(path)
        finally:
            ctx.turn.give()
        ctx.progress(1.0, "done")
        return {"measurements": Measurements(path=path, runtime=self.runtime, summary=summary(record))}

    def _load_and_measure(self, ctx: RunContext, model: ModelArtifact, dataset: DatasetHandle,
                          target: TargetHandle | None, gzip_bytes: Any) -> MeasurementsFile:
        from heiti.nodes.runtimes import ahead

        p = self.params
        ctx.progress(0.0, "loading data")
        held = ahead.take(dataset, p.split, p.max_samples)  # read while the node waited for its model
        if held is None:
            x, y = load_split(dataset, p.split, p.max_samples)
            have = dataset.layout or "NCHW"
        else:
            x, y, have = held
        x = to_layout(x, have, model.meta.layout or "NCHW")
        from heiti.nodes.runtimes.measure import ready_for_quality

        ready_for_quality(y)
        remote = target is not None and target.kind != "local"
        stats_seen: list[dict[str, Any]] = []
        options = {"threads": p.threads, "batch_size": p.batch_size, "meta": model.meta.as_dict(),
                   "inputs": model.inputs, "outputs": model.outputs, **self.session_options()}
        ctx.progress(0.05, f"opening {self.runtime}")
        session = open_session(self, model, options, target if remote else None, ctx, stats_seen)
        try:
            return self._measure(ctx, session, model, dataset, x, y, target, remote, stats_seen, gzip_bytes)
        finally:
            try:
                session.close()
            except Exception as err:  # noqa: BLE001 - closing must not hide the measurement
                ctx.warn(f"closing the {self.runtime} session failed: {err}")

    def _measure(self, ctx: RunContext, session: Any, model: ModelArtifact, dataset: DatasetHandle,
                 x: np.ndarray, y: np.ndarray | None, target: TargetHandle | None,
                 remote: bool, stats_seen: list[dict[str, Any]], gzip_bytes: Any) -> MeasurementsFile:
        import numpy as np
        from heiti.engine.measurements import MeasurementsFile, TargetInfo
        from heiti.nodes.runtimes import measure
        from heiti.nodes.runtimes.backends import session_steps
        from heiti.nodes.runtimes.contention import load_warnings
        from heiti.nodes.runtimes.environment import environment_info
        from heiti.nodes.runtimes.loop import measure_sampled
        from heiti.nodes.runtimes.measure import (
            classification_quality,
            drift_warning,
            latency_drift,
            latency_stats,
            latency_windows,
            thin_latencies,
        )
        from heiti.nodes.runtimes.modelfacts import model_facts, model_size_bytes
        from heiti.nodes.runtimes.outputs import class_scores, keep_outputs, model_task

        p = self.params
        check_shape(session, x, p.batch_size, self.runtime)
        prepare, stage, run_call, finish = session_steps(session)
        batches, pad = split_batches(x, p.batch_size)
        ctx.progress(0.08, "preparing inputs")
        feeds, pre_ns = [], np.zeros(len(batches), dtype=np.int64)
        for i, batch in enumerate(batches):
            if i % 64 == 0:
                ctx.check_cancelled()
            t = time.perf_counter_ns()
            try:
                feeds.append(prepare([batch]))
            except Exception as err:  # noqa: BLE001 - a shape or dtype the model refuses
                raise NodeError(f"{self.runtime} cannot take the dataset's inputs {list(batch.shape)}: {err}") from err
            pre_ns[i] = time.perf_counter_ns() - t
        del batches
        gzipped = gzip_bytes()  # nothing of this node's own runs beside the timed calls either

        device_ms: list[float] = []  # one per timed call, every pass
        after_call = None
        if remote:
            def after_call(i: int) -> None:
                device_ms.append(getattr(session, "last_device_ms", None) or np.nan)

        def on_progress(done: int, total: int) -> None:
            ctx.progress(0.1 + 0.8 * done / total, f"{done}/{total} calls")

        ctx.turn.take()  # --interleave: the runtimes started together have all prepared (engine.turns)
        ctx.progress(0.1, "measuring")
        try:
            result, resources = measure_sampled(
                run_call, feeds, metric=lambda name, v, x: ctx.metric(name, v, x=x), warmup=p.warmup,
                stage=stage, finish=finish, after_call=after_call, cancelled=lambda: ctx.cancelled,
                period_s=p.sample_period_s, t0=ctx.t0, on_progress=on_progress,
                repeat=p.repeat, duration_s=p.duration_s, turn=ctx.turn)
        except Exception as err:  # noqa: BLE001 - the runtime failed on real data
            raise NodeError(f"{self.runtime} failed while running the model: {err}") from err
        if result.cancelled or result.completed < len(feeds):
            raise Cancelled(f"{ctx.node_id}: cancelled after {result.completed} of {len(feeds)} calls")

        ctx.progress(0.92, "computing quality")
        n_samples = len(x)
        latencies_ms = result.latencies_ns / NS_PER_MS
        windows = latency_windows(latencies_ms, result.wall_ns / 1e9)
        record = MeasurementsFile(
            node=ctx.node_id, runtime=self.runtime, label=p.label or ctx.node_id,
            model_format=model.model_format, model_path=str(model.path),
            model_size_bytes=model_size_bytes(model.path), task=model_task(model.meta, dataset.task),
            model_gzip_bytes=gzipped, model_meta=model_facts(model.meta.as_dict()),
            dataset={"name": dataset.meta.get("name", Path(dataset.path).stem), "split": p.split,
                     "samples": n_samples, "input_shape": list(x.shape[1:]), "class_names": dataset.class_names},
            options={**p.model_dump(), **self.session_options()},
            environment=environment_info(self.runtime, self.dists),
            compile_time_s=model.meta.compile_seconds(), pipeline=model.meta.as_dict().get("pipeline", []),
            latency_ms=latency_stats(latencies_ms, result.first_ns / NS_PER_MS),
            preprocess_ms=latency_stats(pre_ns / NS_PER_MS),
            latencies_ms=[round(v, 6) for v in thin_latencies(latencies_ms, measure.MAX_STORED_LATENCIES).tolist()],
            latency_count=int(latencies_ms.size),
            throughput_per_s=(n_samples * result.completed / len(feeds) / (result.latencies_ns.sum() / 1e9)
                              if result.latencies_ns.sum() else None),
            latency_windows=windows, latency_drift=latency_drift(windows),
            passes=round(result.completed / len(feeds), 3),
            batch_size=p.batch_size, resources=resources,
            loop_period_ms=result.wall_ns / max(result.completed, 1) / NS_PER_MS,
        )
        if remote and target is not None:
            device = np.asarray(device_ms, dtype=np.float64)
            valid = device[~np.isnan(device)]
            record.device_latency_ms = latency_stats(valid) if valid.size else None
            record.target = TargetInfo(kind=target.kind, address=target.address,
                                       device=dict(getattr(session, "device_info", {}) or {}))
            if not valid.size:
                record.warnings.append("the device reported no timing of its own")
            record.resources += device_series(stats_seen)

        drifted = drift_warning(record.latency_drift, windows, p.drift_tolerance)
        if drifted:
            record.warnings.append(drifted)
        if not remote:  # the host's sampler describes the host: a device's load comes from the device
            record.machine_load = result.machine_load
            record.warnings += load_warnings(record.machine_load)
        if ctx.turn.shared:
            record.turns = result.turns
        if model.model_format == "tvm" and not model.meta.tuned_trials:
            record.warnings.append("this TVM module is untuned (default schedules): set tune_trials on compile.tvm "
                                   "to let MetaSchedule search for fast kernels before comparing speed")
        t = time.perf_counter_ns()
        outputs = unbatch(result.outputs, pad, n_samples)
        if record.task == "detection" and dataset.task == "detection":
            record.detection = detection_quality(dataset, p.split, outputs, model.meta)
        elif record.task == "classification" and y is not None:
            names = list(model.meta.class_names or dataset.class_names)
            record.classification = classification_quality(y, class_scores(outputs, len(names)), names)
        elif record.task != "none":
            record.warnings.append(f"the '{p.split}' split has no labels (y_{p.split}): no quality figures")
        post_total = result.postprocess_ns.astype(np.float64)
        post_total += (time.perf_counter_ns() - t) / max(len(post_total), 1)
        record.postprocess_ms = latency_stats(post_total / NS_PER_MS)
        record.outputs_file = keep_outputs(ctx, outputs)
        return record

    def publish(self, run_dir: Path, node_id: str, outputs: dict[str, Any]) -> None:
        measurements = outputs.get("measurements")
        if isinstance(measurements, Measurements) and Path(measurements.path).is_file():
            dest = Path(run_dir) / "measurements" / f"{node_id}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(measurements.path, dest)


# --- helpers ---------------------------------------------------------------------------------------
def gzip_bytes_wait(gzip_bytes: Any) -> None:
    """Let the background gzip finish (its errors do not matter once the node fails anyway)."""
    try:
        gzip_bytes()
    except Exception:  # noqa: BLE001, S110 - the node's own error is the one to report
        pass


# --- the node kinds --------------------------------------------------------------------------------
BACKENDS = "heiti.nodes.runtimes.backends"


class OnnxRuntimeRun(RuntimeNode):
    """Run an ONNX model with ONNX Runtime on the CPU and measure latency, resources and quality."""

    kind = "runtime.onnxruntime"
    title = "ONNX Runtime"
    runtime = "onnxruntime"
    formats = ("onnx",)
    session = f"{BACKENDS}.onnxruntime:OrtSession"
    probe = "onnxruntime"
    warm_imports = ("onnxruntime",)
    dists = ("onnxruntime",)
    colours = {"onnx": "#4f8ef7"}

    class Params(RuntimeParams):
        inter_threads: int = Field(0, ge=0, description="inter-op threads; 0 = ONNX Runtime's default")
        graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
            "all", description="graph optimisation level")

    def session_options(self) -> dict[str, Any]:
        return {"inter_threads": self.params.inter_threads, "graph_optimization": self.params.graph_optimization}


class LiteRTRun(RuntimeNode):
    """Run a TFLite model with the LiteRT interpreter; int8 inputs and outputs are (de)quantised
    from their scale and zero point outside the timed call."""

    kind = "runtime.litert"
    title = "LiteRT"
    runtime = "litert"
    formats = ("tflite",)
    session = f"{BACKENDS}.litert:LiteRTSession"
    probe = "ai_edge_litert"
    warm_imports = ("ai_edge_litert.interpreter",)
    likely_layout = "NHWC"
    dists = ("ai-edge-litert",)
    colours = {"tflite": "#f29d38"}

    class Params(RuntimeParams):
        xnnpack: bool = Field(True, description="use LiteRT's default XNNPACK delegate; off = reference-style built-in kernels")

    def session_options(self) -> dict[str, Any]:
        return {"xnnpack": self.params.xnnpack}


class TVMRun(RuntimeNode):
    """Run a TVM-compiled library (.so) in the Relax virtual machine on the host CPU."""

    kind = "runtime.tvm"
    title = "TVM (Relax VM)"
    runtime = "tvm"
    formats = ("tvm",)
    session = f"{BACKENDS}.tvm:TVMSession"
    probe = "tvm"
    warm_imports = ("tvm",)
    dists = ("apache-tvm", "apache-tvm-ffi")
    colours = {"tvm": "#b36bd4"}


class OpenVINORun(RuntimeNode):
    """Run an OpenVINO IR (or an ONNX model) with OpenVINO on the CPU, in f32 unless asked otherwise."""

    kind = "runtime.openvino"
    title = "OpenVINO"
    runtime = "openvino"
    formats = ("openvino", "onnx")
    session = f"{BACKENDS}.openvino:OpenVINOSession"
    probe = "openvino"
    warm_imports = ("openvino",)
    dists = ("openvino",)
    colours = {"openvino": "#3cb7e8"}

    class Params(RuntimeParams):
        precision: Literal["", "f32", "f16", "bf16"] = Field(
            "", description="inference precision hint; empty = the model's meta or f32")
        performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"

    def session_options(self) -> dict[str, Any]:
        return {"precision": self.params.precision, "performance_hint": self.params.performance_hint}


class TorchRun(RuntimeNode):
    """Run a PyTorch model eagerly on the CPU (state_dict + architecture, or torch.export .pt2)."""

    kind = "runtime.torch"
    title = "PyTorch"
    runtime = "torch"
    formats = ("torch", "pt2")
    session = f"{BACKENDS}.torch:TorchSession"
    probe = "torch"
    warm_imports = ("torch",)
    dists = ("torch",)
    colours = {"torch": "#ee4c2c", "pt2": "#f07a5e"}


class KerasRun(RuntimeNode):
    """Run a Keras model (.keras, loaded in safe mode) with TensorFlow on the CPU."""

    kind = "runtime.keras"
    title = "Keras"
    runtime = "keras"
    formats = ("keras",)
    session = f"{BACKENDS}.keras:KerasSession"
    probe = "keras"
    warm_imports = ("heiti.nodes.keras_env:import_keras",)
    likely_layout = "NHWC"
    dists = ("keras", "tensorflow-cpu", "tensorflow")
    colours = {"keras": "#e0533d"}


#: the built-in runtime kinds, as defined above (plug-ins add theirs by registering a RuntimeNode subclass)
RUNTIME_NODES: list[type[RuntimeNode]] = [cls for cls in RuntimeNode.__subclasses__() if cls.__module__ == __name__]


def runtime_classes(registry: Any = None) -> dict[str, type[RuntimeNode]]:
    """Runtime name -> its node class, over the registered kinds (built-ins and plug-ins).

    Listing imports node modules only, never a framework. When two kinds share a runtime name
    (a variant with other params), the first in kind order speaks for it.
    """
    from heiti.engine.registry import default_registry

    found: dict[str, type[RuntimeNode]] = {}
    for cls in (registry or default_registry()).classes():
        if isinstance(cls, type) and issubclass(cls, RuntimeNode) and cls.runtime and cls.session:
            found.setdefault(cls.runtime, cls)
    return found


def format_colours(registry: Any = None) -> dict[str, str]:
    """Model format -> editor colour, as the registered runtimes declare them."""
    colours: dict[str, str] = {}
    for cls in runtime_classes(registry).values():
        for fmt, colour in cls.colours.items():
            colours.setdefault(fmt, colour)
    return colours
