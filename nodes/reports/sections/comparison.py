"""Every runtime against the baseline: a table sorted by latency and the quality/latency/size chart."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Cell, Figure, Note, Section, Table, Text
from heiti.nodes.reports.collect import Report
from heiti.nodes.reports.compare import (
    Row,
    comparison_rows,
    int8_reason,
    int8_slower,
    reference_quality,
    tuning,
    tuning_text,
)
from heiti.nodes.reports.fmt import ms, pct, points, ratio_text, seconds, size, times


def _row(r: Row, several_targets: bool) -> list:
    """Speed, size and quality against the baseline: what the ranking rests on."""
    e = r.entry
    lat = e.data.latency_ms
    name = Cell(e.name + (" (baseline)" if r.is_baseline else ""), "baseline" if r.is_baseline else "",
                title=e.runtime_label)
    delta_tone = "" if r.within_tolerance is None or r.is_baseline else ("good" if r.within_tolerance else "bad")
    speed_tone = "" if r.speedup is None or r.is_baseline else ("good" if r.speedup >= 1 else "bad")
    delta = "baseline" if r.is_baseline and r.quality is not None else points(r.quality_delta)
    return [name, *([_target(e)] if several_targets else []),
            ms(r.latency_ms), ms(lat.median if lat else None), ms(lat.p99 if lat else None),
            Cell(times(r.speedup), speed_tone), size(r.size_bytes), _size_change(r), pct(r.quality),
            Cell(delta, delta_tone)]


def _made_row(r: Row, several_models: bool, with_agreement: bool, with_tuning: bool, with_gzip: bool) -> list:
    """How the model was made and what it ships as, and how its outputs agree with the reference's."""
    e = r.entry
    return [Cell(e.name, "baseline" if r.is_baseline else "", title=e.runtime_label), e.data.model_format or "—",
            *([e.source_model or "—"] if several_models else []), seconds(e.data.compile_time_s),
            *([_tuning(e)] if with_tuning else []), *([_gzip(r)] if with_gzip else []),
            *([_agreement(e, r)] if with_agreement else [])]


#: columns the comparison's first table has at most: ten fit a 1280 px window (tested with Chromium)
MAX_COLUMNS = 10


def build(report: Report) -> Section | None:
    """Two tables that each fit a 1280 px window: speed, size and quality against the baseline, then
    how each model was made (format, lineage, compile and tuning time, gzip size, output agreement)."""
    if not report.entries:
        return None
    rows = comparison_rows(report)
    quality_title = " / ".join(sorted({r.quality_name for r in rows if r.quality_name})) or "quality"
    several_targets = len({_target(r.entry) for r in rows}) > 1
    several_models = len({r.entry.source_model for r in rows} - {""}) > 1
    with_agreement = any(r.entry.data.agreement is not None for r in rows)
    with_tuning = any(tuning(r.entry) is not None for r in rows)
    with_gzip = any(r.gzip_bytes for r in rows)
    target = ["target"] if several_targets else []
    columns = ["runtime", *target, "mean ms", "median ms", "p99 ms", "speed-up", "model size", "size vs baseline",
               quality_title, "Δ quality"]
    blocks: list = [Table.build(
        columns, [_row(r, several_targets) for r in rows], numeric_from=1 + len(target),
        caption=f"Sorted by {report.statistic} latency. Speed-up = baseline latency / runtime latency; size against "
                "the baseline's; Δ quality in percentage points, green within the tolerance.")]
    made = ["runtime", "format", *(["model"] if several_models else []), "compile time",
            *(["tuning"] if with_tuning else []), *(["gzip size"] if with_gzip else []),
            *(["agreement"] if with_agreement else [])]
    blocks.append(Table.build(
        made, [_made_row(r, several_models, with_agreement, with_tuning, with_gzip) for r in rows],
        numeric_from=made.index("compile time"), wrap=["tuning", "agreement"],
        caption="How each model was made, in the same order. Compile time: the step that made the model "
                "(conversion or compilation; tuning counted apart)"
                + ("; tuning: MetaSchedule trials and their time (untuned = default schedules)" if with_tuning else "")
                + ("; gzip size: the model file gzip'ed (level 6), where weight sharing (clustering) and pruning "
                   "show" if with_gzip else "")
                + "."
                + (" Agreement: outputs against the reference runtime's on the same inputs — worst per-sample "
                   "cosine · max |difference| over max |reference| · arg-max agreement; green within the agreement "
                   "tolerance." if with_agreement else "")))
    slow_int8 = int8_slower(rows)
    if slow_int8:
        reasons = sorted({int8_reason(q.entry) for q, _ in slow_int8})
        blocks.append(Note("int8 is slower than fp32 here: " + " ".join(reasons), "warn",
                           [f"{q.entry.name}: {ms(q.latency_ms)} ms against {ms(f.latency_ms)} ms for "
                            f"{f.entry.name} (fp32), {ratio_text(f.latency_ms / q.latency_ms, 'faster', 'slower')}"
                            for q, f in slow_int8]))
    if several_models:
        blocks.append(Text("The runtimes run models trained separately (column model): their accuracy differs by "
                           "training as well as by conversion.", "muted"))
    ref = reference_quality(report)
    points_ = [{"label": r.entry.name, "latency": r.latency_ms, "quality": r.quality, "size": r.size_bytes,
                "color": r.entry.color, "baseline": r.is_baseline}
               for r in rows if r.latency_ms is not None and r.quality is not None
               and (ref is None or r.entry.data.task == ref[0])]
    if points_:
        floor = ref[2] - report.tolerance if ref is not None else None
        blocks.append(Figure("quality_vs_latency", plots.bubble_chart(points_, ref[1] if ref else "quality", floor,
                                                                               report.statistic),
                             "Up and to the left is better; the dashed line is the lowest quality still within "
                             "the tolerance."))
    elif rows:
        blocks.append(Text("No runtime has both a latency and a quality figure: no quality/latency chart.", "muted"))
    return Section("comparison", "Comparison", blocks)


def _agreement(entry, row: Row) -> Cell:
    a = entry.data.agreement
    if a is None:
        return Cell("—")
    if a.max_abs is None:
        return Cell(a.note or "not comparable", "bad")
    if a.max_abs == 0 and entry.name == a.reference:
        return Cell("reference", "baseline")
    parts = ([f"{a.cosine:.6f}" if a.cosine is not None else "—",
              f"{a.max_rel:.1e}" if a.max_rel is not None else f"abs {a.max_abs:.1e}"]
             + ([f"{a.top1 * 100:.1f}%"] if a.top1 is not None else []))
    if a.map50_delta is not None:
        parts.append(f"ΔmAP {a.map50_delta * 100:+.2f} pt")
    return Cell(" · ".join(parts), "good" if a.within else "bad", title=a.note)


def _size_change(row: Row) -> Cell:
    if row.is_baseline or row.size_ratio is None:
        return Cell("—" if row.size_ratio is None else "1.00×")
    if abs(row.size_ratio - 1) < 0.005:
        return Cell("same")
    return Cell(ratio_text(row.size_ratio, "smaller", "larger"), "good" if row.size_ratio > 1 else "")


def _target(entry) -> str:
    t = entry.data.target
    return f"{t.kind} {t.address}".strip()


def _tuning(entry) -> Cell:
    state = tuning(entry)
    text = tuning_text(entry)
    short = text.replace(" (default schedules)", "")  # the caption says what untuned means
    return Cell(short, "" if state is None else ("good" if state[0] else "bad"), title=text)


def _gzip(row: Row) -> Cell:
    """The gzip'ed size, with its share of the file when gzip finds something to squeeze."""
    if not row.gzip_bytes:
        return Cell("—")
    share = row.gzip_bytes / row.size_bytes if row.size_bytes else None
    text = size(row.gzip_bytes) + (f" ({share * 100:.0f} %)" if share is not None else "")
    return Cell(text, "good" if share is not None and share < 0.75 else "",
                title="the model gzip'ed at level 6, as a share of its size on disk")
