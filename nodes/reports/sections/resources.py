"""CPU and memory over time, every runtime overlaid from its own start."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Figure, Section, Table, Text
from heiti.nodes.reports.collect import Report, pick_series

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
        row = [e.name, "—", "—", "—", "—"]
        source = ""
        cpu_series = pick_series(e.data.resources, "cpu")
        if cpu_series is not None:
            cpu_unit = cpu_series.unit or cpu_unit
            cpu.append(_line(e, cpu_series, 1.0))
            row[1] = f"{sum(cpu_series.values) / len(cpu_series.values):.0f}"
            row[2] = f"{max(cpu_series.values):.0f}"
            source = cpu_series.source
        same_source = [s for s in e.data.resources if cpu_series is None or s.source == cpu_series.source]
        process = next((s for s in same_source if s.name in ("process_cpu_percent", "proc_cpu_percent") and s.values),
                       None)
        if process is not None and process is not cpu_series:
            row[3] = f"{sum(process.values) / len(process.values):.0f}"
        mem_series = pick_series(e.data.resources, "memory")
        if mem_series is not None:
            line = _line(e, mem_series, _memory_scale(mem_series.name, mem_series.unit))
            memory.append(line)
            row[4] = f"{max(line['values']):.0f}"
            source = source or mem_series.source
        if cpu_series is not None or mem_series is not None:
            if source not in ("", "host"):
                row[0] = f"{e.name} ({source})"
            table.append(row)
    if not cpu and not memory:
        return Section("resources", "CPU and memory",
                       [Text("No resource samples in the measurements (or the run's events).", "muted")])
    panels = []
    if cpu:
        panels.append(("CPU (whole machine)" if cpu_unit == "%" else "CPU", cpu_unit, cpu))
    if memory:
        panels.append(("Memory of the process (resident)", "MB", memory))
    blocks: list = [
        Figure("resources", plots.timelines(panels), "Each runtime from its own start; the runtimes ran one "
                                                     "after the other, not at the same time."),
        Table.build(["runtime", "mean CPU %", "peak CPU %", "process CPU % (of one core)", "peak memory MB"], table,
                    caption="CPU: all cores of the machine together, as sampled during the timed loop.")]
    return Section("resources", "CPU and memory", blocks)


def _line(entry, series, scale: float) -> dict:
    t0 = series.t[0]
    label = entry.name + (f" ({series.source})" if series.source not in ("", "host") else "")
    return {"label": label, "t": [t - t0 for t in series.t], "values": [v * scale for v in series.values],
            "color": entry.color}
