"""CPU and memory over time, every runtime overlaid from its own start."""

from __future__ import annotations

from .. import plots
from ..blocks import Figure, Section, Table, Text
from ..collect import Report, resource_kind

UNITS_TO_MB = {"b": 1 / 2**20, "bytes": 1 / 2**20, "kb": 1 / 1024, "kib": 1 / 1024, "mb": 1.0, "mib": 1.0,
               "gb": 1024.0, "gib": 1024.0}


def _memory_scale(name: str, unit: str) -> float:
    unit = unit.lower()
    if unit in UNITS_TO_MB:
        return UNITS_TO_MB[unit]
    low = name.lower()
    if low.endswith("_bytes") or low.endswith("_b"):
        return 1 / 2**20
    if low.endswith("_kb"):
        return 1 / 1024
    if low.endswith("_gb"):
        return 1024.0
    return 1.0


def build(report: Report) -> Section | None:
    cpu, memory, table = [], [], []
    cpu_unit = "%"
    for e in report.entries:
        peak_cpu = mean_cpu = peak_mem = None
        for s in e.data.resources:
            kind = resource_kind(s.name, s.unit)
            if kind is None or not s.t or len(s.t) != len(s.values):
                continue
            t0 = s.t[0]
            times = [t - t0 for t in s.t]
            label = e.name + (f" ({s.source})" if s.source not in ("", "host") else "")
            if kind == "cpu":
                cpu_unit = s.unit or cpu_unit
                cpu.append({"label": label, "t": times, "values": s.values, "color": e.color})
                peak_cpu = max(s.values)
                mean_cpu = sum(s.values) / len(s.values)
            else:
                scale = _memory_scale(s.name, s.unit)
                values = [v * scale for v in s.values]
                memory.append({"label": label, "t": times, "values": values, "color": e.color})
                peak_mem = max(values)
        if e.data.resources:
            table.append([e.name, f"{mean_cpu:.0f}" if mean_cpu is not None else "—",
                          f"{peak_cpu:.0f}" if peak_cpu is not None else "—",
                          f"{peak_mem:.0f}" if peak_mem is not None else "—"])
    if not cpu and not memory:
        return Section("resources", "CPU and memory",
                       [Text("No resource samples in the measurements (or the run's events).", "muted")])
    panels = []
    if cpu:
        panels.append(("CPU", cpu_unit, cpu))
    if memory:
        panels.append(("Memory (resident)", "MB", memory))
    blocks: list = [
        Figure("resources", plots.timelines(panels), "Each runtime from its own start; the runtimes ran one "
                                                     "after the other, not at the same time."),
        Table.build(["runtime", "mean CPU %", "peak CPU %", "peak memory MB"], table)]
    return Section("resources", "CPU and memory", blocks)
