"""CPU temperature and frequency, GPU utilisation and memory over time, where they were sampled
(the host's sampler and a device's STATS record them only where the OS or NVML exposes them)."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Figure, Section, Table, Text
from heiti.nodes.reports.collect import Report

PANELS = [("temp_c", "CPU temperature", "°C"), ("freq_mhz", "CPU frequency", "MHz"),
          ("gpu_percent", "GPU utilisation", "%"), ("gpu_mem_mb", "GPU memory", "MB")]


def build(report: Report) -> Section | None:
    panels, rows = [], []
    for name, title, unit in PANELS:
        lines = []
        for e in report.entries:
            found = [s for s in e.data.resources if s.name == name and s.t and len(s.t) == len(s.values)]
            series = next((s for s in found if s.source not in ("", "host")), found[0] if found else None)
            if series is None:
                continue
            t0 = series.t[0]
            label = e.name + (f" ({series.source})" if series.source not in ("", "host") else "")
            lines.append({"label": label, "t": [t - t0 for t in series.t], "values": series.values,
                          "color": e.color})
            rows.append([label, title, f"{min(series.values):.0f}", f"{sum(series.values) / len(series.values):.0f}",
                         f"{max(series.values):.0f}", unit])
        if lines and any(min(line["values"]) != max(line["values"]) for line in lines):
            panels.append((title, unit, lines))  # a quantity that never moved is said by the table alone
    if not panels and not rows:
        if not report.entries:
            return None
        return Section("sensors", "Temperature, frequency and GPU", [Text(
            "No temperature, CPU frequency or GPU samples: this machine (or device) does not expose them "
            "(common in virtual machines), or no NVIDIA GPU with pynvml was present.", "muted")])
    blocks: list = [Figure("sensors", plots.timelines(panels), "Each runtime from its own start. A frequency "
                           "that falls while the temperature climbs is throttling.")] if panels else [
        Text("Every sampled quantity stayed at one value the whole time (a virtual machine reports its nominal "
             "frequency): no chart to draw.", "muted")]
    blocks.append(Table.build(["runtime", "quantity", "min", "mean", "max", "unit"], rows, numeric_from=2))
    return Section("sensors", "Temperature, frequency and GPU", blocks)
