"""The comparison against the baseline and the verdict at the top of the page.

Pure functions over entries:
- speed-up = baseline latency / entry latency (higher is faster; the mean by default, the median
  when the report asks for it),
- size ratio = baseline size / entry size (higher is smaller),
- quality change in absolute points of the task's headline metric (accuracy or mAP@0.5);
and how each model was made: tuned or not, int8 or fp32 (from the model meta in the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

from heiti.nodes.reports.collect import Entry, Report
from heiti.nodes.reports.fmt import pct, points, ratio_text, size


@dataclass
class Row:
    entry: Entry
    is_baseline: bool
    latency_ms: float | None
    speedup: float | None
    size_bytes: int | None
    size_ratio: float | None
    #: the model gzip'ed (level 6): what weight sharing and pruning save on disk or over the air
    gzip_bytes: int | None
    quality_name: str
    quality: float | None
    #: entry quality minus baseline quality, as a fraction (0.01 = one percentage point)
    quality_delta: float | None
    #: None when the entry has no comparable quality figure
    within_tolerance: bool | None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0 or numerator <= 0:
        return None
    return numerator / denominator


def reference_quality(report: Report) -> tuple[str, str, float] | None:
    """(task, metric name, value) that the tolerance is measured from: the baseline's, else the best."""
    base = report.baseline
    if base is not None and base.quality is not None:
        return base.data.task, *base.quality
    task = base.data.task if base is not None else None
    scored = [e for e in report.entries if e.quality is not None and (task is None or e.data.task == task)]
    if not scored:
        return None
    best = max(scored, key=lambda e: e.quality[1])
    return best.data.task, *best.quality


def comparison_rows(report: Report) -> list[Row]:
    """One row per entry, sorted by latency (entries without latency last)."""
    base = report.baseline
    base_latency = base.latency(report.statistic) if base else None
    base_size = base.data.model_size_bytes if base else None
    ref = reference_quality(report)
    rows = []
    for entry in report.entries:
        quality = entry.quality
        comparable = ref is not None and quality is not None and entry.data.task == ref[0]
        delta = quality[1] - ref[2] if comparable else None
        rows.append(Row(
            entry=entry,
            is_baseline=entry is base,
            latency_ms=entry.latency(report.statistic),
            speedup=_ratio(base_latency, entry.latency(report.statistic)),
            size_bytes=entry.data.model_size_bytes,
            size_ratio=_ratio(base_size, entry.data.model_size_bytes),
            gzip_bytes=entry.data.model_gzip_bytes,
            quality_name=quality[0] if quality else "",
            quality=quality[1] if quality else None,
            quality_delta=delta,
            within_tolerance=_agreement_within(entry) if delta is None else delta >= -report.tolerance - 1e-12,
        ))
    rows.sort(key=lambda r: (r.latency_ms is None, r.latency_ms or 0.0))
    return rows


def _agreement_within(entry: Entry) -> bool | None:
    """Without a quality figure (task none, unlabelled data) output agreement with the reference judges."""
    agreement = entry.data.agreement
    return agreement.within if agreement is not None else None


def agreement_text(entry: Entry) -> str:
    a = entry.data.agreement
    if a is None or a.max_abs is None:
        return ""
    text = (f"cosine {a.cosine:.6f}, max rel {a.max_rel:.2e}" if a.cosine is not None and a.max_rel is not None
            else f"max abs {a.max_abs:.2e}")
    return text + (f", top-1 {a.top1 * 100:.1f}%" if a.top1 is not None else "")


@dataclass
class Verdict:
    fastest: Row | None
    smallest: Row | None
    most_accurate: Row | None
    #: the fastest runtime whose quality stays within the tolerance of the reference
    recommended: Row | None
    sentence: str
    reasons: list[str]
    #: every row sharing the best quality (exact conversions often tie)
    tied_most_accurate: list[Row]


def verdict(report: Report, rows: list[Row] | None = None) -> Verdict:
    rows = rows if rows is not None else comparison_rows(report)
    timed = [r for r in rows if r.latency_ms is not None]
    sized = [r for r in rows if r.size_bytes]
    ref = reference_quality(report)
    scored = [r for r in rows if r.quality is not None and (ref is None or r.entry.data.task == ref[0])]
    fastest = min(timed, key=lambda r: r.latency_ms) if timed else None
    smallest = min(sized, key=lambda r: r.size_bytes) if sized else None
    most_accurate = max(scored, key=lambda r: r.quality) if scored else None
    good = [r for r in timed if r.within_tolerance]
    recommended = min(good, key=lambda r: r.latency_ms) if good else None
    if recommended is None and not scored:
        recommended = fastest  # nothing to judge accuracy by: speed decides
    sentence, reasons = _explain(report, rows, recommended, ref)
    tied = [r for r in scored if most_accurate is not None and abs(r.quality - most_accurate.quality) < 1e-9]
    return Verdict(fastest, smallest, most_accurate, recommended, sentence, reasons, tied)


def _explain(report: Report, rows: list[Row], rec: Row | None,
             ref: tuple[str, str, float] | None) -> tuple[str, list[str]]:
    """The one-line recommendation and the reasons behind it (including faster runtimes turned down)."""
    if rec is None:
        if ref is None and any(r.within_tolerance is False for r in rows):
            return "No timed runtime's outputs agree with the reference within the tolerance: nothing to recommend.", []
        if any(r.latency_ms is not None and r.within_tolerance is False for r in rows):
            return (f"No timed runtime stays within the accuracy tolerance of {pct(ref[2])} {ref[1]}: "
                    "nothing to recommend.", [])
        return "No runtime has both a latency and a quality figure: nothing to recommend.", []
    base = report.baseline
    reasons: list[str] = []
    if rec.is_baseline:
        sentence = f"Keep {rec.entry.name}: no other runtime is faster while staying within the accuracy tolerance."
    else:
        sentence = f"Use {rec.entry.name}"
        if rec.speedup is not None and base is not None:
            sentence += f": {ratio_text(rec.speedup, 'faster', 'slower')} than {base.name}"
        sentence += "."
    if rec.quality is not None and ref is not None:
        if rec.quality_delta is not None and not rec.is_baseline:
            reasons.append(f"{rec.quality_name} {pct(rec.quality)} ({points(rec.quality_delta)} against "
                           f"{pct(ref[2])}; the tolerance is {report.tolerance * 100:.2f} pt)")
        else:
            reasons.append(f"{rec.quality_name} {pct(rec.quality)}")
    elif ref is None and rec.entry.data.agreement is not None:
        reasons.append(f"no quality figures; its outputs agree with {rec.entry.data.agreement.reference}'s "
                       f"({agreement_text(rec.entry)}), within the agreement tolerance")
    elif ref is None:
        reasons.append("no quality figures were measured, so speed alone decides")
    if rec.size_bytes:
        text = f"model size {size(rec.size_bytes)}"
        if rec.size_ratio is not None and not rec.is_baseline:
            same = abs(rec.size_ratio - 1) < 0.005
            text += " (the same as the baseline)" if same else f" ({ratio_text(rec.size_ratio, 'smaller', 'larger')})"
        reasons.append(text)
    rejected = [r for r in rows if r.within_tolerance is False and r.latency_ms is not None
                and rec.latency_ms is not None and r.latency_ms < rec.latency_ms]
    for r in rejected:
        if r.quality_delta is None:
            reasons.append(f"{r.entry.name} is faster but its outputs differ from the reference's beyond the "
                           f"agreement tolerance ({agreement_text(r.entry) or 'not comparable'})")
            continue
        reasons.append(f"{r.entry.name} is faster but loses {abs(r.quality_delta) * 100:.2f} pt of "
                       f"{r.quality_name}, beyond the tolerance")
    return sentence, reasons


# --- how the model was made: tuning, int8 ---------------------------------------------------------
def tuning(entry: Entry) -> tuple[bool, int, float | None] | None:
    """(tuned, trials, tuning seconds) for a model a tuning compiler made (its meta has tuned_trials);
    None for models no tuning compiler touched."""
    meta = entry.data.model_meta
    if "tuned_trials" not in meta and "tuned" not in meta and entry.data.model_format != "tvm":
        return None
    trials = int(meta.get("tuned_trials") or 0)
    seconds = meta.get("tune_time_s")
    return bool(meta.get("tuned")) or trials > 0, trials, float(seconds) if isinstance(seconds, int | float) else None


def tuning_text(entry: Entry) -> str:
    """'untuned (default schedules)', 'tuned: 200 trials, 6.1 min', 'tuned (records reused)', or '—'."""
    from heiti.nodes.reports.fmt import seconds

    state = tuning(entry)
    if state is None:
        return "—"
    tuned, trials, spent = state
    if not tuned:
        return "untuned (default schedules)"
    if not trials:  # an earlier tuning's records applied (shared database)
        return "tuned (records reused)" + (f", {seconds(spent)}" if spent else "")
    return f"tuned: {trials} trials" + (f", {seconds(spent)}" if spent is not None else "")


#: quantization meta values (converters' names) that mean integer kernels
_INT8 = ("int8", "uint8", "dynamic")


def precision_of(entry: Entry) -> str:
    """'int8' for an int8-quantised model (weights or weights and activations), 'fp16', else 'fp32'."""
    q = str(entry.data.model_meta.get("quantization") or "").lower()
    if any(word in q for word in _INT8):
        return "int8"
    if "16" in q:
        return "fp16"
    return "fp32"


def int8_slower(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(int8 row, fp32 row) pairs where an int8 model runs slower than the fp32 model of the same
    runtime (and the same source model and target, when those are known)."""
    pairs = []
    for row in rows:
        if precision_of(row.entry) != "int8" or row.latency_ms is None:
            continue
        peers = [r for r in rows if r is not row and precision_of(r.entry) == "fp32" and r.latency_ms is not None
                 and r.entry.data.runtime == row.entry.data.runtime and r.entry.run == row.entry.run
                 and r.entry.data.target.address == row.entry.data.target.address
                 and r.entry.source_model == row.entry.source_model]
        fp32 = min(peers, key=lambda r: r.latency_ms, default=None)
        if fp32 is not None and row.latency_ms > fp32.latency_ms:
            pairs.append((row, fp32))
    return pairs


def int8_reason(entry: Entry) -> str:
    """Why int8 can be slow on the CPU the entry ran on, from the int8 dot-product flags recorded there."""
    flags = entry.data.environment.get("int8_dot_product")
    remote = entry.data.target.kind not in ("", "local")
    if remote or not isinstance(flags, list):
        return ("int8 kernels are fast only on CPUs with int8 dot-product instructions (x86 VNNI or AMX, Arm "
                "dot-product); without them int8 runs through 16-bit multiply-adds and can be slower than fp32. "
                "Check the device's CPU flags.")
    if flags:
        return (f"this CPU has int8 dot-product instructions ({', '.join(flags)}), so the runtime's int8 kernels "
                "may not use them for this model (small layers, quantise/dequantise around unsupported ops).")
    return ("this CPU has no int8 dot-product instructions (VNNI, AVX512-VNNI or AMX in /proc/cpuinfo); int8 runs "
            "through 16-bit multiply-adds and can be slower than fp32. int8 still saves size and pays on CPUs that "
            "have them.")
