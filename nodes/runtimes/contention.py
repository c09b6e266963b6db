"""Was the machine quiet while a runtime was timed? Other programs' CPU use and the hypervisor's
steal over the timed loop.

Measuring nodes run alone within a Heiti run, but another program, another run or, on a virtual
machine, its neighbours on the host may not. A runtime that uses every core loses whatever share
they take, and its latencies grow with it: on a 2-core VM a single busy process made a 2-thread
ONNX Runtime call 3-4x slower. So each local measurement records how many cores others kept busy
and how much CPU time the hypervisor withheld (steal), and warns past a limit, so that a
comparison the machine spoiled says so instead of ranking runtimes by their luck.

The figures come from the kernel's counters read at the start and the end of the timed loop: all
cores' busy time, less this process's, less the steal, over the wall time. The counters tick in
hundredths of a second per core, so over MIN_WINDOW_S the error stays below
2 x 0.01 s x cores / 0.5 s (0.08 cores on 2 cores), a third of OTHER_CORES_LIMIT; shorter loops get
no figure rather than a noisy one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil

#: cores other programs may keep busy on average before a measurement is flagged: the `heiti`
#: process relaying events takes a few hundredths; a quarter core is already ~12 % of a 2-core
#: machine that a runtime using both cores loses
OTHER_CORES_LIMIT = 0.25
#: steal (CPU time the hypervisor gave to other guests), percent of all cores' time
STEAL_LIMIT = 5.0
#: timed loops shorter than this get no figure (see the module's note on the counters' resolution)
MIN_WINDOW_S = 0.5


@dataclass(frozen=True)
class CpuCounters:
    wall_s: float
    busy_s: float  # all cores, steal included
    steal_s: float
    own_s: float  # this process, user + system
    cores: int


def read_counters(process: Any = None) -> CpuCounters:
    """The kernel's CPU counters now (`process`: a psutil.Process, by default this one)."""
    times = psutil.cpu_times(percpu=True)
    busy = steal = 0.0
    for c in times:  # guest time is counted in user time already
        total = sum(c) - getattr(c, "guest", 0.0) - getattr(c, "guest_nice", 0.0)
        busy += total - c.idle - getattr(c, "iowait", 0.0)
        steal += getattr(c, "steal", 0.0)
    own = (process or psutil.Process()).cpu_times()
    return CpuCounters(time.perf_counter(), busy, steal, own.user + own.system, len(times))


def machine_load(before: CpuCounters, after: CpuCounters) -> dict[str, float] | None:
    """{"other_cores", "steal_percent", "cores", "seconds"} between two readings, or None when
    they are less than MIN_WINDOW_S apart."""
    wall = after.wall_s - before.wall_s
    if wall < MIN_WINDOW_S or after.cores <= 0:
        return None
    steal = max(after.steal_s - before.steal_s, 0.0)
    others = (after.busy_s - before.busy_s) - steal - (after.own_s - before.own_s)
    return {"other_cores": round(max(others, 0.0) / wall, 3), "steal_percent": round(100.0 * steal / (wall * after.cores), 2),
            "cores": after.cores, "seconds": round(wall, 3)}


class LoadMeter:
    """Counters over the stretches a loop was timed in (its own turns, when runtimes take turns:
    the other runtimes' blocks in between are not "other programs")."""

    def __init__(self) -> None:
        self._since: CpuCounters | None = None
        self._sum = CpuCounters(0.0, 0.0, 0.0, 0.0, 0)

    def start(self) -> None:
        self._since = read_counters()

    def stop(self) -> None:
        if self._since is None:
            return
        now, was, self._since = read_counters(), self._since, None
        self._sum = CpuCounters(self._sum.wall_s + now.wall_s - was.wall_s, self._sum.busy_s + now.busy_s - was.busy_s,
                                self._sum.steal_s + now.steal_s - was.steal_s, self._sum.own_s + now.own_s - was.own_s,
                                now.cores)

    def load(self) -> dict[str, float] | None:
        return machine_load(CpuCounters(0.0, 0.0, 0.0, 0.0, self._sum.cores), self._sum)


def load_warnings(load: dict[str, float] | None) -> list[str]:
    """What a measurement's `machine_load` says about its figures, in words (empty when quiet)."""
    if not load:
        return []
    out = []
    if load["other_cores"] >= OTHER_CORES_LIMIT:
        out.append(f"other programs kept {load['other_cores']:.2f} of {load['cores']:g} cores busy on average "
                   f"while this runtime was timed: its latencies may be inflated; measure again on a quiet "
                   f"machine before comparing")
    if load["steal_percent"] >= STEAL_LIMIT:
        out.append(f"the hypervisor withheld {load['steal_percent']:.0f}% of the CPU time (steal) while this "
                   f"runtime was timed: on a shared virtual machine latencies vary with its neighbours")
    return out
