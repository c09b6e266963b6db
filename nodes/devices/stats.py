"""Device metrics for `heiti serve` and the host: CPU, memory, temperature and CPU frequency.

The sampler runs on its own clock so that a link busy with a request still has a fresh sample to
send as soon as it is free; each sample carries the device's monotonic time of reading.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil


def read_temperature() -> float | None:
    """The hottest CPU/SoC sensor in °C, or None where none is readable."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        sensors = {}
    preferred = ("cpu_thermal", "cpu-thermal", "soc_thermal", "coretemp", "k10temp", "zenpower", "cpu")
    for name in preferred + tuple(sorted(sensors)):
        values = [s.current for s in sensors.get(name, []) if s.current is not None and -40 < s.current < 150]
        if values:
            return float(max(values))
    zone = Path("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(zone.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def read_frequency() -> float | None:
    """The mean current CPU frequency in MHz, or None where the OS does not expose it.

    Frequency is what reveals throttling: a hot or power-capped board lowers it before latency
    drifts. psutil reads cpufreq on Linux; some VMs expose nothing.
    """
    try:
        freq = psutil.cpu_freq()
    except (AttributeError, OSError, NotImplementedError):
        freq = None
    if freq is not None and freq.current and freq.current > 0:
        return float(freq.current)
    try:
        khz = [int(p.read_text().strip()) for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")]
    except (OSError, ValueError):
        khz = []
    return sum(khz) / len(khz) / 1000.0 if khz else None


def read_sensors() -> dict[str, float | None]:
    """Temperature and frequency, each None when this machine does not expose it (explicitly absent)."""
    return {"temp_c": read_temperature(), "freq_mhz": read_frequency()}


class StatsSampler:
    """Samples device metrics in a background thread; links send the newest sample."""

    def __init__(self, period: float) -> None:
        self.period = max(0.05, float(period))
        self.latest: dict[str, Any] | None = None
        self.count = 0
        self.ready = threading.Event()  # set once the first sample exists
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        proc = psutil.Process()
        psutil.cpu_percent(None)
        proc.cpu_percent(None)
        while not self._stop.wait(self.period):
            sample: dict[str, Any] = {
                "t": time.monotonic(),
                "cpu_percent": psutil.cpu_percent(None),
                "proc_cpu_percent": proc.cpu_percent(None),
                "rss_mb": proc.memory_info().rss / 2**20,
                "mem_percent": psutil.virtual_memory().percent,
            }
            sample.update(read_sensors())
            self.latest, self.count = sample, self.count + 1
            self.ready.set()

    def stop(self) -> None:
        self._stop.set()
