"""The verdict at the top: fastest, smallest, most accurate, and the one to use."""

from __future__ import annotations

from heiti.nodes.reports.blocks import Card, Cards, Note, Section, Table, Text
from heiti.nodes.reports.collect import Report
from heiti.nodes.reports.compare import Row, comparison_rows, verdict
from heiti.nodes.reports.fmt import ms, pct, ratio_text, size


def _latency_detail(row: Row, statistic: str) -> str:
    text = f"{ms(row.latency_ms)} ms {statistic}"
    if row.speedup is not None and not row.is_baseline:
        text += f" · {ratio_text(row.speedup, 'faster', 'slower')}"
    return text


def _runs_table(report: Report) -> Table:
    """Which runs are compared: when each started, how it ended, what it measured."""
    import datetime as dt

    from heiti.engine.events import RunFinished, RunStarted

    rows = []
    for run in report.runs:
        started = next((e for e in run.events if isinstance(e, RunStarted)), None)
        finished = next((e for e in run.events if isinstance(e, RunFinished)), None)
        when = dt.datetime.fromtimestamp(started.t).strftime("%Y-%m-%d %H:%M") if started else "—"
        graph = str(run.graph.get("name", "")) if run.graph else ""
        count = sum(1 for e in report.entries if e.run == run.name)
        rows.append([run.name, graph or "—", when, finished.status if finished else "—", str(count)])
    return Table.build(["run", "graph", "started", "status", "runtimes"], rows, numeric_from=4,
                       caption="The runs compared in this report.")


def build(report: Report) -> Section | None:
    if not report.entries:
        return Section("summary", "Verdict", [Note("No measurements to report.", "error", report.problems)])
    rows = comparison_rows(report)
    v = verdict(report, rows)
    cards = []
    if v.recommended is not None:
        r = v.recommended
        detail = _latency_detail(r, report.statistic)
        if r.quality is not None:
            detail += f" · {r.quality_name} {pct(r.quality)}"
        cards.append(Card("Best within tolerance", r.entry.name, detail, "best"))
    if v.fastest is not None:
        cards.append(Card("Fastest", v.fastest.entry.name, _latency_detail(v.fastest, report.statistic)))
    if v.smallest is not None:
        r = v.smallest
        detail = size(r.size_bytes) + (f" · gzip {size(r.gzip_bytes)}" if r.gzip_bytes else "")
        ties = [x for x in rows if x.size_bytes == r.size_bytes and x is not r]
        if r.size_ratio is not None and not r.is_baseline and abs(r.size_ratio - 1) >= 0.005:
            detail += f" · {ratio_text(r.size_ratio, 'smaller', 'larger')}"
        if ties:
            detail += " · same size: " + (", ".join(x.entry.name for x in ties) if len(ties) <= 3 else
                                          f"{len(ties)} others")
        cards.append(Card("Smallest", r.entry.name, detail))
    if v.most_accurate is not None:
        r = v.most_accurate
        detail = f"{r.quality_name} {pct(r.quality)}"
        others = [t.entry.name for t in v.tied_most_accurate if t is not r]
        scored = [x for x in rows if x.quality is not None and x.quality_name == r.quality_name]
        if others and len(others) + 1 == len(scored):
            cards.append(Card("Most accurate", "all tie", f"{detail} for every runtime"))
        else:
            if others:
                detail += " · tied with " + (", ".join(others) if len(others) <= 3 else f"{len(others)} others")
            cards.append(Card("Most accurate", r.entry.name, detail))
    blocks: list = [Cards(cards), Text(v.sentence, "lead")]
    if v.reasons:
        blocks.append(Note("Why:", "info", v.reasons))
    base = report.baseline
    if base is not None:
        blocks.append(Text(f"Baseline: {base.name} — {base.runtime_label}. Speed-up and size ratios are "
                           f"against it; the accuracy tolerance is {report.tolerance * 100:.2f} percentage points.",
                           "muted"))
    noisy = [f"{e.name}: mean {ms(lat.mean)} ms against a median of {ms(lat.median)} ms"
             for e in report.entries if (lat := e.data.latency_ms) is not None and lat.median > 0
             and (lat.mean > 2 * lat.median or lat.p99 < lat.mean)]
    if noisy:
        advice = ("The ranking uses medians, which such calls do not move." if report.statistic == "median" else
                  "Compare medians as well (the report's latency_statistic param ranks by median), or run again "
                  "on a quiet machine.")
        blocks.append(Note("A few very slow calls dominate the mean latency of some runtimes (a busy machine or "
                           f"a background task?). {advice}", "warn", noisy))
    if len(report.runs) > 1:
        blocks.append(_runs_table(report))
    incomplete = [f"{e.name}: {', '.join(e.missing)}" for e in report.entries if e.missing]
    if incomplete:
        blocks.append(Note("Some measurements are incomplete; the report shows what they hold. Missing:",
                           "warn", incomplete))
    failures = report.failures()
    if failures:
        blocks.append(Note("Not every step of the run finished; what follows covers the runtimes that did:",
                           "error", failures))
    if report.problems:
        blocks.append(Note("Some inputs could not be read:", "error", report.problems))
    return Section("summary", "Verdict", blocks)
