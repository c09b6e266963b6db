"""Resource sampling during a measurement: a background thread reading CPU (total and per core),
process RSS, system memory, GPU, temperature and frequency, which also drives the latency forwarder.

Each tick does little (a few /proc reads): while the thread holds the GIL the timed thread returning
from a runtime call waits for it, so this is the one thing that can disturb the timing
(bench/overhead.py measures what is left).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from heiti.engine.measurements import TimeSeries

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


UNITS = {"cpu_percent": "%", "steal_percent": "%", "rss_mb": "MB", "mem_percent": "%", "gpu_percent": "%",
         "gpu_mem_mb": "MB", "temp_c": "°C", "freq_mhz": "MHz"}
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

    def _cpu_percent_per_core(self) -> tuple[list[float], float | None]:
        """Busy % per core since the last call (steal counts as busy), and the steal % of all cores'
        time (None where the kernel does not count it), from our own counters: psutil.cpu_percent
        keeps one global state, so another sampler in the process (a device server) would skew it."""
        now = psutil.cpu_times(percpu=True)
        last, self._last_cpu = self._last_cpu, now
        percents, stolen, elapsed = [], 0.0, 0.0
        for before, after in zip(last or now, now, strict=False):
            total = sum(after) - sum(before)
            idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
            percents.append(min(max(100.0 * (total - idle) / total, 0.0), 100.0) if total > 0 else 0.0)
            stolen += getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
            elapsed += max(total, 0.0)
        has_steal = bool(now) and hasattr(now[0], "steal")
        return percents, (min(max(100.0 * stolen / elapsed, 0.0), 100.0) if elapsed > 0 else 0.0) if has_steal else None

    def sample(self) -> None:
        t = time.perf_counter() - self.t0
        per_core, steal = self._cpu_percent_per_core()
        self._record("cpu_percent", sum(per_core) / max(len(per_core), 1), t, True)
        for i, value in enumerate(per_core):
            self._record(f"cpu_percent_core{i}", value, t, False)
        if steal is not None:
            self._record("steal_percent", steal, t, False)
        try:
            self._record("rss_mb", self.process.memory_info().rss / 2**20, t, True)
            self._record("process_cpu_percent", self.process.cpu_percent(), t, False)
        except psutil.Error:
            pass
        self._record("mem_percent", psutil.virtual_memory().percent, t, True)
        for name, value in (self._gpu.sample() if self._gpu else {}).items():
            self._record(name, value, t, True)
        if t - self._sensors_t >= SENSOR_PERIOD_S:
            from heiti.nodes.devices.stats import read_sensors  # imported by `start`, outside the timed loop

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
        # imported here, not by the first sample: an import on the sampler's thread beside a busy
        # timed loop waits for the GIL at each file it reads (~0.3 s), and takes it from the loop
        import heiti.nodes.devices.stats  # noqa: F401

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
