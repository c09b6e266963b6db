"""Was the machine quiet while a runtime was timed? Other programs' CPU use and the hypervisor's
steal, from the resource sampler's series.

Measuring nodes run alone within a Heiti run, but another program, another run or, on a virtual
machine, its neighbours on the host may not. A runtime that uses every core loses whatever share
they take, and its latencies grow with it: on a 2-core VM a single busy process made a 2-thread
ONNX Runtime call 3-4x slower. So each local measurement records how many cores others kept busy
and how much CPU time the hypervisor withheld (steal), and warns past a limit, so that a
comparison the machine spoiled says so instead of ranking runtimes by their luck.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

#: cores other programs may keep busy on average before a measurement is flagged: the `heiti`
#: process relaying events takes a few hundredths; a quarter core is already ~12 % of a 2-core
#: machine that a runtime using both cores loses
OTHER_CORES_LIMIT = 0.25
#: steal (CPU time the hypervisor gave to other guests), percent of all CPU time
STEAL_LIMIT = 5.0


def machine_load(resources: list[Any]) -> dict[str, float] | None:
    """{"other_cores": mean, "other_cores_max", "steal_percent", "cores", "samples"} over the
    sampler's ticks, or None without the series (a device's measurement, a sampler too short).

    Each tick: all cores' busy time (`cpu_percent`, an average over cores, which counts steal as
    busy) minus this process's (`process_cpu_percent`, 100 = one core) minus the steal.
    """
    series = {s.name: s.values for s in resources if getattr(s, "source", "host") == "host"}
    cores = sum(1 for name in series if name.startswith("cpu_percent_core"))
    busy, own = series.get("cpu_percent") or [], series.get("process_cpu_percent") or []
    steal = series.get("steal_percent") or [0.0] * len(busy)
    n = min(len(busy), len(own), len(steal))
    if n == 0 or cores <= 0:
        return None
    others = [max(0.0, (b - s) / 100 * cores - o / 100) for b, o, s in zip(busy[:n], own[:n], steal[:n], strict=True)]
    return {"other_cores": round(fmean(others), 3), "other_cores_max": round(max(others), 3),
            "steal_percent": round(fmean(steal[:n]), 2), "cores": cores, "samples": n}


def load_warnings(load: dict[str, float] | None) -> list[str]:
    """What a measurement's `machine_load` says about its figures, in words (empty when quiet)."""
    if not load:
        return []
    out = []
    if load["other_cores"] >= OTHER_CORES_LIMIT:
        out.append(f"other programs kept {load['other_cores']:.2f} of {load['cores']:g} cores busy on average "
                   f"(up to {load['other_cores_max']:.2f}) while this runtime was timed: its latencies may be "
                   f"inflated; measure again on a quiet machine before comparing")
    if load["steal_percent"] >= STEAL_LIMIT:
        out.append(f"the hypervisor withheld {load['steal_percent']:.0f}% of the CPU time (steal) while this "
                   f"runtime was timed: on a shared virtual machine latencies vary with its neighbours")
    return out
