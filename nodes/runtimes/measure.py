"""Measuring a runtime: the timed loop, latency statistics, resource sampling, quality metrics.

Framework-free on purpose: the loop takes plain callables (prepare / stage / run / finish) so the
same code times ONNX Runtime, LiteRT, TVM, a remote device, or a bare function in a benchmark.
scikit-learn is imported lazily inside the quality function.

Why the loop looks the way it does (docs/architecture.md, Measurements): inputs are prepared before the loop; only the
runtime call sits between the two `perf_counter_ns` reads; the cold first call is kept apart;
nothing is emitted from inside the loop — a background thread reads the preallocated latency
array and forwards new values as metric events once per sampling period.

That thread is the one thing that can disturb the timing: while it holds the GIL, the timed
thread returning from a runtime call waits for it (and, on a busy CPU, for the scheduler too).
So each tick does little — a few /proc reads, at most ten averaged latency events — and the
runtime nodes sample every 0.25 s by default. bench/overhead.py measures what is left.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from heiti.engine.measurements import ClassificationQuality, LatencyStats, LatencyWindow, TimeSeries

# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def latency_stats(values_ms: Sequence[float] | np.ndarray, first: float | None = None) -> LatencyStats | None:
    """Summary of per-call times in ms (the cold first call passed apart, not in `values_ms`)."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return None
    return LatencyStats(
        mean=float(arr.mean()), std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        median=float(np.median(arr)), p90=float(np.percentile(arr, 90)),
        p99=float(np.percentile(arr, 99)), min=float(arr.min()), max=float(arr.max()),
        first=None if first is None else float(first), count=int(arr.size),
    )


def model_files(path: Path | str) -> list[Path]:
    """The files that make up a model: a file plus its weight side-files (.bin, .onnx.data), or a folder's files."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if not path.is_file():
        return []
    siblings = [path.with_suffix(".bin")] if path.suffix == ".xml" else []
    siblings.append(path.with_name(path.name + ".data"))
    if path.suffix == ".onnx":
        siblings.append(path.with_suffix(".data"))
    return [path, *(extra for extra in dict.fromkeys(siblings) if extra.is_file() and extra != path)]


def model_size_bytes(path: Path | str) -> int | None:
    """Bytes on disk of a model: a file plus its weight side-files (.bin, .onnx.data), or a folder."""
    path = Path(path)
    files = model_files(path)
    return sum(p.stat().st_size for p in files) if files or path.is_dir() else None


#: models above this many bytes are not gzip'ed (seconds per 100 MB at level 6; not worth a minute)
GZIP_MAX_BYTES = 1 << 30


class _CountingSink:
    """A write-only file object that keeps only the number of bytes written to it."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def model_gzip_bytes(path: Path | str, level: int = 6) -> int | None:
    """Bytes of the model gzip'ed (level 6, streamed, nothing kept): what weight sharing and pruning save.

    A single file is gzip'ed as it is; a model of several files (side-files, a folder) as a tar of
    them, with fixed names and times so equal models give equal figures. None when the model is
    missing or larger than GZIP_MAX_BYTES.
    """
    import gzip
    import tarfile

    path = Path(path)
    files = model_files(path)
    if not files or sum(f.stat().st_size for f in files) > GZIP_MAX_BYTES:
        return None
    sink = _CountingSink()
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0) as gz:  # type: ignore[arg-type]
        if len(files) == 1 and not path.is_dir():
            with files[0].open("rb") as src:
                while chunk := src.read(1 << 20):
                    gz.write(chunk)
        else:
            root = path if path.is_dir() else path.parent
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for file in files:
                    info = tar.gettarinfo(str(file), arcname=file.relative_to(root).as_posix())
                    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
                    with file.open("rb") as src:
                        tar.addfile(info, src)
    return sink.count


#: meta keys kept out of the measurements file: bulky, or recorded there already
_META_LEFT_OUT = frozenset({"history", "class_names", "postprocess", "pipeline", "arch_config", "input_shape",
                            "input_name", "target"})


def model_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """How the model was made (tuning, quantisation, sparsity, clusters, ...) for the measurements file:
    the model meta without bulky keys, so a report can tell tuned from untuned and int8 from fp32."""
    import json

    facts = {}
    for key, value in meta.items():
        if key in _META_LEFT_OUT:
            continue
        text = json.dumps(value, default=str)
        if len(text) <= 1000:  # a plug-in's big extras stay in the model's own meta
            facts[key] = json.loads(text)
    return facts


#: /proc/cpuinfo flags of integer dot-product instructions that int8 kernels rely on (x86 VNNI and
#: AMX, Arm dot-product and i8mm); without them int8 maths goes through 16-bit multiply-adds
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp", "i8mm")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, None where unreadable (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(runtime: str = "", dists: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Where the numbers were taken: CPU, cores, OS, Python and framework versions (no imports).

    `dists` are the distributions whose versions describe the runtime; by default those its
    runtime class declares.
    """
    if dists is None:
        from heiti.nodes.runtimes import runtime_classes

        cls = runtime_classes().get(runtime)
        dists = cls.dists if cls is not None else ()
    versions: dict[str, str] = {"numpy": np.__version__}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    mem = psutil.virtual_memory()
    return {
        "cpu": cpu_model(), "machine": platform.machine(),
        "cores_logical": psutil.cpu_count(logical=True), "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(mem.total / 2**30, 2), "os": platform.platform(),
        "python": sys.version.split()[0], "frameworks": versions,
        **({"int8_dot_product": sorted(flags & set(INT8_DOT_FLAGS))} if (flags := cpu_flags()) is not None else {}),
    }


# --------------------------------------------------------------------------------------------
# classification quality
# --------------------------------------------------------------------------------------------


def classification_quality(y_true: np.ndarray, scores: np.ndarray,
                           class_names: Sequence[str] = ()) -> ClassificationQuality:
    """Accuracy, top-5, per-class precision/recall/F1, G-mean and the confusion matrix.

    `scores` is (N, classes): logits or probabilities, only their order matters.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).reshape(len(y_true), -1)
    n_classes = max(scores.shape[1], len(class_names), int(y_true.max(initial=-1)) + 1)
    if n_classes > 4096:  # the confusion matrix is classes² integers: a 320x320 map is not 102,400 classes
        raise ValueError(f"{n_classes} classes is not a class vector (at most 4096 are scored); "
                         "use task 'none' for outputs that are not [N, C] scores")
    labels = list(range(n_classes))
    y_pred = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0  # classes absent from the test split would pull the means to zero
    top5 = None
    if scores.shape[1] > 5:
        top = np.argpartition(-scores, 5, axis=1)[:, :5]
        top5 = float(np.mean(np.any(top == y_true[:, None], axis=1)))
    rec = recall[present]
    g_mean = float(np.exp(np.mean(np.log(rec)))) if rec.size and np.all(rec > 0) else 0.0
    names = list(class_names) if len(class_names) == n_classes else [
        class_names[i] if i < len(class_names) else str(i) for i in labels]
    return ClassificationQuality(
        accuracy=float(np.mean(y_pred == y_true)), top5=top5,
        precision_per_class=precision.tolist(), recall_per_class=recall.tolist(),
        f1_per_class=f1.tolist(), support_per_class=[int(s) for s in support],
        precision_mean=float(precision[present].mean()) if present.any() else 0.0,
        recall_mean=float(rec.mean()) if rec.size else 0.0,
        f1_mean=float(f1[present].mean()) if present.any() else 0.0,
        g_mean=g_mean,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        class_names=names,
    )


# --------------------------------------------------------------------------------------------
# resource sampling
# --------------------------------------------------------------------------------------------

MetricSink = Callable[[str, float, float], None]  # (name, value, x)


class _Gpu:
    """NVIDIA GPU utilisation and memory through pynvml, when both the module and a GPU exist."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no pynvml, no driver or no GPU: sample nothing
            self.handles = []

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # noqa: BLE001
                continue
            suffix = "" if i == 0 else f"_{i}"
            out[f"gpu_percent{suffix}"] = float(util.gpu)
            out[f"gpu_mem_mb{suffix}"] = mem.used / 2**20
        return out


UNITS = {"cpu_percent": "%", "rss_mb": "MB", "mem_percent": "%", "gpu_percent": "%", "gpu_mem_mb": "MB",
         "temp_c": "°C", "freq_mhz": "MHz"}
STREAMED = ("cpu_percent", "rss_mb", "mem_percent")  # sent as events; per-core series stay in the file
SENSOR_PERIOD_S = 0.5  # temperature and frequency move slowly; reading sysfs each tick would cost more


class ResourceSampler:
    """Background thread sampling CPU (total and per core), process RSS, system memory, and CPU
    temperature and frequency where the OS exposes them.

    Timestamps are `perf_counter() - t0`, the run clock of every metric event. Each period it
    also calls `on_tick()` — the measurement loop uses it to forward new latencies, so that the
    timed loop itself never emits anything. Use as a context manager.
    """

    def __init__(self, period_s: float = 0.1, t0: float | None = None, sink: MetricSink | None = None,
                 on_tick: Callable[[], None] | None = None, pid: int | None = None) -> None:
        self.period_s = max(float(period_s), 0.01)
        self.t0 = time.perf_counter() if t0 is None else t0
        self.sink = sink
        self.on_tick = on_tick
        self.process = psutil.Process(pid or os.getpid())
        self._values: dict[str, tuple[list[float], list[float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpu: _Gpu | None = None
        self._last_cpu: list[Any] | None = None
        self._sensors_t = -SENSOR_PERIOD_S

    def _record(self, name: str, value: float, t: float, stream: bool) -> None:
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = ([], [])
        values[0].append(t)
        values[1].append(value)
        if stream and self.sink is not None:
            self.sink(name, value, t)

    @property
    def series(self) -> dict[str, TimeSeries]:
        """What was sampled so far, one TimeSeries per quantity."""
        return {name: TimeSeries(name=name, unit=UNITS.get(name.split("_core")[0], ""),
                                 t=[round(v, 4) for v in t], values=[round(float(v), 3) for v in values])
                for name, (t, values) in self._values.items()}

    def _cpu_percent_per_core(self) -> list[float]:
        """Busy % per core since the last call, from our own counters: psutil.cpu_percent keeps one
        global state, so another sampler in the process (a device server in tests) would skew it."""
        now = psutil.cpu_times(percpu=True)
        last, self._last_cpu = self._last_cpu, now
        percents = []
        for before, after in zip(last or now, now, strict=False):
            total = sum(after) - sum(before)
            idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
            percents.append(min(max(100.0 * (total - idle) / total, 0.0), 100.0) if total > 0 else 0.0)
        return percents

    def sample(self) -> None:
        t = time.perf_counter() - self.t0
        per_core = self._cpu_percent_per_core()
        self._record("cpu_percent", sum(per_core) / max(len(per_core), 1), t, True)
        for i, value in enumerate(per_core):
            self._record(f"cpu_percent_core{i}", value, t, False)
        try:
            self._record("rss_mb", self.process.memory_info().rss / 2**20, t, True)
            self._record("process_cpu_percent", self.process.cpu_percent(), t, False)
        except psutil.Error:
            pass
        self._record("mem_percent", psutil.virtual_memory().percent, t, True)
        for name, value in (self._gpu.sample() if self._gpu else {}).items():
            self._record(name, value, t, True)
        if t - self._sensors_t >= SENSOR_PERIOD_S:
            from heiti.nodes.devices.stats import read_sensors

            self._sensors_t = t
            for name, value in read_sensors().items():
                if value is not None:  # absent sensors stay absent rather than zero
                    self._record(name, value, t, True)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()
            if self.on_tick is not None:
                self.on_tick()

    def start(self) -> ResourceSampler:
        self._cpu_percent_per_core()  # the first reading of a counter only sets the baseline
        try:
            self.process.cpu_percent()
        except psutil.Error:
            pass
        self._gpu = _Gpu()
        if not self._gpu.handles:
            self._gpu = None
        self._thread = threading.Thread(target=self._loop, name="heiti-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[TimeSeries]:
        """Stop the thread, take one last sample, run the last tick; returns the series."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample()
            if self.on_tick is not None:
                self.on_tick()
        return list(self.series.values())

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# the timed loop
# --------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    latencies_ns: np.ndarray  # timed calls after the first (cold) one, every pass
    first_ns: int | None
    postprocess_ns: np.ndarray  # first pass only
    outputs: list[Any]  # first pass only: one per feed, for quality
    wall_ns: int  # first timed call start -> last call end: the period between inferences
    extra: dict[str, Any] = field(default_factory=dict)
    completed: int = 0  # timed calls, every pass
    cancelled: bool = False


class LatencyBuffer:
    """Per-call latencies (ns) of a loop whose call count is not known in advance.

    Chunks of zeros: the loop fills the current chunk and takes a new one when it is full, so
    nothing is copied between timed calls, and a grown chunk costs one calloc. A zero slot means
    "not timed yet" (a call takes at least one ns), which lets a LatencyForwarder read the
    chunks from another thread while the loop writes them.
    """

    def __init__(self, first: int | np.ndarray, chunk: int = 4096) -> None:
        head = first if isinstance(first, np.ndarray) else np.zeros(max(int(first), 1), dtype=np.int64)
        self.chunks: list[np.ndarray] = [head]
        self.chunk = max(int(chunk), 1)
        self.started_ns: int | None = None  # the loop's start, for progress estimates

    def grow(self, size: int | None = None) -> np.ndarray:
        new = np.zeros(max(int(size or self.chunk), 1), dtype=np.int64)
        self.chunks.append(new)
        return new

    def values(self, count: int) -> np.ndarray:
        """The first `count` latencies, as one array."""
        return np.concatenate(self.chunks)[:count] if len(self.chunks) > 1 else self.chunks[0][:count].copy()


class LatencyForwarder:
    """Reads the loop's latency buffer from another thread and forwards new values.

    A zero slot means "not timed yet", so the loop writes nothing but its latency. At most
    `max_points` events go out per tick: a burst is averaged in chunks, which keeps the thread's
    hold on the GIL short.
    """

    def __init__(self, latencies_ns: np.ndarray | LatencyBuffer, sink: Callable[[str, float, float], None],
                 name: str = "latency_ms", max_points: int = 10) -> None:
        self.buffer = latencies_ns if isinstance(latencies_ns, LatencyBuffer) else LatencyBuffer(latencies_ns)
        self.sink = sink
        self.name = name
        self.max_points = max_points
        self.sent = 0
        self._lock = threading.Lock()

    def _new_values(self) -> np.ndarray:
        """Timed values after the `sent` first ones, up to the first untimed slot."""
        parts, offset = [], 0
        for chunk in list(self.buffer.chunks):  # the loop may append a chunk meanwhile
            end = offset + chunk.size
            if end > self.sent:
                tail = chunk[max(self.sent - offset, 0):]
                zeros = np.flatnonzero(tail == 0)
                if zeros.size:
                    parts.append(tail[:int(zeros[0])].copy())
                    break
                parts.append(tail.copy())
            offset = end
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def count_done(self) -> int:
        return self.sent + self._new_values().size

    def __call__(self) -> None:
        with self._lock:
            new = self._new_values().astype(np.float64) / 1e6
            if new.size == 0:
                return
            chunks = np.array_split(np.arange(new.size), min(new.size, self.max_points))
            for idx in chunks:
                self.sink(self.name, float(new[idx].mean()), float(self.sent + idx[-1]))
            self.sent += new.size


def run_timed_loop(
    run: Callable[[Any], Any],
    feeds: Sequence[Any],
    *,
    warmup: int = 10,
    stage: Callable[[Any], Any] | None = None,
    finish: Callable[[Any], Any] | None = None,
    after_call: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    latencies_ns: np.ndarray | LatencyBuffer | None = None,
    check_every: int = 16,
    repeat: int = 1,
    duration_s: float = 0.0,
) -> LoopResult:
    """Time a cold first call, warm up, then time `run(feed)` over the feeds, pass after pass.

    The cold call (on feeds[0]) is reported apart and kept out of the statistics. The first pass
    covers every feed and keeps its outputs (quality is computed once per sample); later passes
    run the same steps and are timed the same way, until `repeat` passes are done and
    `duration_s` has passed (a duration may end mid-pass). `stage(feed)` (copy into the runtime's
    input buffers) and `finish(raw)` (fetch/dequantise the outputs) run outside the timed region;
    `finish` and `after_call(i)` (e.g. reading a device's own timing of call i) are timed apart
    as post-processing on the first pass. Pass `latencies_ns` (zeros, or a LatencyBuffer) to let
    a LatencyForwarder watch it while the loop runs.
    """
    if not feeds:
        raise ValueError("no inputs to run")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    clock = time.perf_counter_ns
    n = len(feeds)
    buf = latencies_ns if isinstance(latencies_ns, LatencyBuffer) else LatencyBuffer(
        n * repeat if latencies_ns is None else latencies_ns)
    post = np.zeros(n, dtype=np.int64)
    outputs: list[Any] = [None] * n

    if stage is not None:
        stage(feeds[0])
    t = clock()
    raw = run(feeds[0])
    first = clock() - t
    if finish is not None:
        finish(raw)
    for i in range(warmup):
        feed = feeds[i % n]
        if stage is not None:
            stage(feed)
        raw = run(feed)
        if finish is not None:
            finish(raw)

    cur = buf.chunks[-1]
    size, j = cur.size, 0
    completed = 0
    stopped = False
    min_calls = n * repeat
    t_start = t_end = clock()
    buf.started_ns = t_start
    deadline = t_start + int(max(duration_s, 0.0) * 1e9)
    # first pass: outputs and post-processing kept for quality
    for i in range(n):
        if i % check_every == 0 and cancelled():
            stopped = True
            break
        feed = feeds[i]
        if stage is not None:
            stage(feed)
        t = clock()
        raw = run(feed)
        t_end = clock()
        if j == size:
            cur = buf.grow()
            size, j = cur.size, 0
        cur[j] = t_end - t
        j += 1
        if after_call is not None:
            after_call(i)
        outputs[i] = finish(raw) if finish is not None else raw
        post[i] = clock() - t_end
        completed = i + 1
    if not stopped and (completed < min_calls or t_end < deadline):
        # more passes: size the next chunk from the first pass's pace, so it rarely grows again
        per_call = max((t_end - t_start) // max(completed, 1), 1)
        wanted = max(min_calls - completed, (deadline - t_end) // per_call * 5 // 4 + 1)
        if size - j < wanted:
            cur = buf.grow(max(wanted, buf.chunk))
            size, j = cur.size, 0
            buf.chunk = max(buf.chunk, wanted // 4)
        while not stopped:
            for feed in feeds:
                if completed >= min_calls and t_end >= deadline:
                    break
                if completed % check_every == 0 and cancelled():
                    stopped = True
                    break
                if stage is not None:
                    stage(feed)
                t = clock()
                raw = run(feed)
                t_end = clock()
                if j == size:
                    cur = buf.grow()
                    size, j = cur.size, 0
                cur[j] = t_end - t
                j += 1
                if after_call is not None:
                    after_call(completed)
                if finish is not None:
                    finish(raw)
                completed += 1
            else:
                continue
            break
    wall = t_end - t_start
    done_first = min(completed, n)
    return LoopResult(
        latencies_ns=buf.values(completed), first_ns=int(first),
        postprocess_ns=post[:done_first].copy(), outputs=outputs[:done_first],
        wall_ns=int(wall), completed=completed, cancelled=stopped,
    )


def measure_sampled(
    run: Callable[[Any], Any],
    feeds: Sequence[Any],
    *,
    metric: MetricSink,
    warmup: int = 10,
    stage: Callable[[Any], Any] | None = None,
    finish: Callable[[Any], Any] | None = None,
    after_call: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    period_s: float = 0.1,
    t0: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    repeat: int = 1,
    duration_s: float = 0.0,
) -> tuple[LoopResult, list[TimeSeries]]:
    """`run_timed_loop` with the resource sampler running and latencies streamed by its thread.

    `metric(name, value, x)` receives resource samples (x = seconds since t0) and latencies
    (x = call index); `on_progress(done, total)` is called once per sampling period (with a
    duration, `total` is estimated from the pace so far). This is the whole measurement as the
    runtime nodes do it, and what bench/overhead.py times.
    """
    planned = len(feeds) * max(repeat, 1)
    buffer = LatencyBuffer(planned)
    forwarder = LatencyForwarder(buffer, metric)

    def tick() -> None:
        forwarder()
        if on_progress is None:
            return
        total = planned
        started = buffer.started_ns
        if duration_s > 0 and started is not None and forwarder.sent:
            elapsed = (time.perf_counter_ns() - started) / 1e9
            if elapsed > 0:
                total = max(planned, forwarder.sent, int(forwarder.sent * duration_s / elapsed))
        on_progress(min(forwarder.sent, total), total)

    sampler = ResourceSampler(period_s, t0=t0, sink=metric, on_tick=tick)
    sampler.start()
    try:
        result = run_timed_loop(run, feeds, warmup=warmup, stage=stage, finish=finish, after_call=after_call,
                                cancelled=cancelled, latencies_ns=buffer, repeat=repeat, duration_s=duration_s)
    finally:
        resources = sampler.stop()
    return result, resources


# --------------------------------------------------------------------------------------------
# latency over time
# --------------------------------------------------------------------------------------------

#: calls per window at least: the median of m calls has a standard error of about 1.25·σ/√m, so
#: with m = 50 and a per-call spread σ of 15 % of the median (small models on a quiet CPU) two
#: windows' medians differ by ~3.7 % (one standard error) from noise alone
MIN_WINDOW_CALLS = 50
MAX_WINDOWS = 10


def latency_windows(latencies_ms: Sequence[float] | np.ndarray, wall_s: float | None = None,
                    windows: int = MAX_WINDOWS, min_calls: int = MIN_WINDOW_CALLS) -> list[LatencyWindow]:
    """The calls cut into up to `windows` consecutive windows of equal count (each of at least
    `min_calls`), with the median of each: latency over time, to see throttling and drift.

    `t_s` (the window's middle, in seconds since the timed loop began) is the share of the timed
    time spent before it, scaled to the loop's wall time `wall_s`: the loop records no clock per
    call beyond the latency itself, so as not to add work between calls.
    """
    arr = np.asarray(latencies_ms, dtype=np.float64)
    count = min(int(windows), arr.size // max(int(min_calls), 1))
    if count < 2:
        return []
    bounds = np.linspace(0, arr.size, count + 1).astype(int)
    cumulative = np.concatenate([[0.0], np.cumsum(arr)])
    total = cumulative[-1] or 1.0
    scale = (wall_s / (total / 1e3)) if wall_s else 1.0
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = arr[a:b]
        middle = (cumulative[a] + cumulative[b]) / 2 / 1e3 * scale
        out.append(LatencyWindow(start=int(a), count=int(b - a), median=float(np.median(part)),
                                 mean=float(part.mean()), p90=float(np.percentile(part, 90)),
                                 t_s=round(float(middle), 4)))
    return out


def latency_drift(windows: Sequence[LatencyWindow]) -> float | None:
    """Relative change of the median from the first window to the last (+0.2 = 20 % slower)."""
    if len(windows) < 2 or windows[0].median <= 0:
        return None
    return windows[-1].median / windows[0].median - 1.0


def drift_warning(drift: float | None, windows: Sequence[LatencyWindow], tolerance: float) -> str | None:
    """A sentence for the report when the drift exceeds the tolerance (either way), else None."""
    if drift is None or abs(drift) <= tolerance:
        return None
    first, last = windows[0], windows[-1]
    way = "slower" if drift > 0 else "faster"
    return (f"latency drifted {drift:+.1%} over the run: the last window's median ({last.median:.4g} ms, "
            f"calls {last.start}-{last.start + last.count - 1}) is {abs(drift):.1%} {way} than the first's "
            f"({first.median:.4g} ms), beyond the {tolerance:.0%} tolerance — throttling or other work on the "
            "machine; see the CPU frequency and temperature")
