"""Latency per inference: percentile table, histograms and violins (the runtime call only)."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Cell, Figure, Section, Table, Text
from heiti.nodes.reports.collect import Report
from heiti.nodes.reports.compare import comparison_rows
from heiti.nodes.reports.fmt import ms


def build(report: Report) -> Section | None:
    rows = comparison_rows(report)
    timed = [r for r in rows if r.entry.data.latency_ms is not None]
    if not timed:
        return Section("latency", "Latency", [Text("No latency figures in any measurements file.", "muted")])
    table = []
    for r in timed:
        d = r.entry.data
        lat = d.latency_ms
        table.append([Cell(r.entry.name, "baseline" if r.is_baseline else ""), ms(lat.mean), ms(lat.std),
                      ms(lat.median), ms(lat.p90), ms(lat.p99), ms(lat.min), ms(lat.max), ms(lat.first),
                      str(lat.count or len(d.latencies_ms) or "—"),
                      f"{d.throughput_per_s:.1f}" if d.throughput_per_s else "—",
                      ms(d.preprocess_ms.mean if d.preprocess_ms else None),
                      ms(d.postprocess_ms.mean if d.postprocess_ms else None)])
    blocks: list = [Table.build(
        ["runtime", "mean", "std", "median", "p90", "p99", "min", "max", "first (cold)", "calls", "per s",
         "pre mean", "post mean"], table,
        caption="Milliseconds per inference, timed around the runtime call after warm-up; the cold first call "
                "is kept out of the other figures. Pre/post: processing outside the runtime call.")]
    remote = [r for r in rows if r.entry.data.device_latency_ms is not None]
    if remote:
        blocks.append(Table.build(
            ["runtime", "device mean", "device median", "device p99", "host mean", "link overhead"],
            [[r.entry.name, ms(r.entry.data.device_latency_ms.mean), ms(r.entry.data.device_latency_ms.median),
              ms(r.entry.data.device_latency_ms.p99), ms(r.latency_ms),
              ms((r.latency_ms or 0) - r.entry.data.device_latency_ms.mean) if r.latency_ms else "—"] for r in remote],
            caption="Remote targets: the call as timed on the device against the round trip seen by the host."))
    series = [{"label": r.entry.name, "values": r.entry.data.latencies_ms, "color": r.entry.color,
               "count": r.entry.data.latency_count or len(r.entry.data.latencies_ms)}
              for r in timed if len(r.entry.data.latencies_ms) > 1]
    if series:
        thinned = [f"{s['label']} {len(s['values']):,} of {s['count']:,}" for s in series
                   if s["count"] > len(s["values"])]
        blocks.append(Figure("latency_violins", plots.violins(series)))
        blocks.append(Figure("latency_histograms", plots.histograms(series),
                             "Black line: mean; red dashed: p99. The slowest 0.5 % are drawn in the last bin."))
        if thinned:
            blocks.append(Text("Long runs keep a sample of their calls for these charts, one drawn from each "
                               f"stretch of equal length ({'; '.join(thinned)} calls); the table's figures are "
                               "over every call.", "muted"))
        blocks.append(Figure("latency_over_calls", plots.latency_over_calls(series),
                             "Slow stretches that come and go point at interference from other work on the "
                             "machine; a steady climb at throttling or a leak."))
    lacking = [r.entry.name for r in timed if len(r.entry.data.latencies_ms) <= 1]
    if lacking:
        blocks.append(Text(f"No per-inference times for {', '.join(lacking)}: no histogram or violin for "
                           f"{'it' if len(lacking) == 1 else 'them'}.", "muted"))
    return Section("latency", "Latency", blocks)
