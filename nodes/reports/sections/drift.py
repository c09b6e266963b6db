"""Latency over time: the median of consecutive windows of calls, and how far the last window
drifted from the first (throttling, interference) — what a long run (duration_s, repeat) shows."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Figure, Note, Section, Table
from heiti.nodes.reports.collect import Report

#: the tolerance a measurements file was judged by when its options do not say (the runtime default)
DEFAULT_TOLERANCE = 0.10


def build(report: Report) -> Section | None:
    entries = [e for e in report.entries if len(e.data.latency_windows) >= 2]
    if not entries:
        return None
    rows, lines, drifted = [], [], []
    for e in entries:
        d = e.data
        windows = d.latency_windows
        tolerance = float(d.options.get("drift_tolerance", DEFAULT_TOLERANCE) or DEFAULT_TOLERANCE)
        drift = d.latency_drift
        within = drift is None or abs(drift) <= tolerance
        rows.append([e.name, f"{d.passes:g}" if d.passes else "—", str(sum(w.count for w in windows)),
                     str(len(windows)), f"{windows[0].median:.4g}", f"{windows[-1].median:.4g}",
                     f"{drift:+.1%}" if drift is not None else "—", f"±{tolerance:.0%}",
                     "ok" if within else "drifted"])
        if not within:
            drifted.append(f"{e.name}: {drift:+.1%} (first window {windows[0].median:.4g} ms, last "
                           f"{windows[-1].median:.4g} ms; tolerance {tolerance:.0%})")
        lines.append({"label": e.name, "t": [w.t_s if w.t_s is not None else i for i, w in enumerate(windows)],
                      "values": [w.median for w in windows], "color": e.color})
    blocks: list = []
    if drifted:
        blocks.append(Note("Latency drifted over the run beyond the tolerance: throttling, or other work on the "
                           "machine. Compare with the CPU frequency and temperature.", "warn", drifted))
    blocks.append(Table.build(
        ["runtime", "passes", "calls", "windows", "first median ms", "last median ms", "drift", "tolerance",
         "verdict"], rows,
        caption="The timed calls cut into consecutive windows of equal count (at least 50 calls each); drift "
                "is the last window's median against the first's."))
    blocks.append(Figure("latency_windows", plots.timelines([("Median latency per window", "ms", lines)]),
                         "Each point: the median of one window of calls, at its middle."))
    return Section("drift", "Latency over time", blocks)
