"""Classification quality: a table across runtimes, then per runtime the confusion matrix and
per-class precision, sensitivity and F1. Runtimes whose predictions match an earlier one exactly
point to it instead of repeating the same pictures."""

from __future__ import annotations

from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Cell, Figure, Group, Section, Table, Text
from heiti.nodes.reports.collect import Entry, Report
from heiti.nodes.reports.compare import comparison_rows, verdict
from heiti.nodes.reports.fmt import num, pct, points


def _fingerprint(entry: Entry) -> tuple:
    c = entry.data.classification
    if not c.confusion_matrix and not c.precision_per_class:
        return ("nothing to compare", entry.name)
    return (tuple(map(tuple, c.confusion_matrix)), tuple(c.precision_per_class), tuple(c.recall_per_class))


def build(report: Report) -> Section | None:
    entries = [e for e in report.entries if e.data.classification is not None and e.data.task != "detection"]
    if not entries:
        return None
    rows = {r.entry.name: r for r in comparison_rows(report)}
    table = []
    for e in entries:
        c = e.data.classification
        r = rows[e.name]
        tone = "" if r.within_tolerance is None or r.is_baseline else ("good" if r.within_tolerance else "bad")
        table.append([Cell(e.name, "baseline" if r.is_baseline else ""), pct(c.accuracy), pct(c.top5),
                      pct(c.precision_mean), pct(c.recall_mean), pct(c.f1_mean), num(c.g_mean),
                      Cell("baseline" if r.is_baseline else points(r.quality_delta), tone)])
    blocks: list = [Table.build(
        ["runtime", "accuracy", "top-5", "precision (mean)", "sensitivity (mean)", "F1 (mean)", "G-mean", "Δ accuracy"],
        table, caption="Means are unweighted over classes; G-mean is the geometric mean of per-class sensitivity.")]
    v = verdict(report)
    keep_open = {r.entry.name for r in (v.recommended, v.most_accurate) if r is not None}
    keep_open |= {report.baseline.name} if report.baseline is not None else set()
    same: dict[tuple, list[Entry]] = {}
    for e in entries:
        same.setdefault(_fingerprint(e), []).append(e)
    groups = []
    for twins in same.values():
        e, others = twins[0], twins[1:]
        c = e.data.classification
        inner: list = []
        names = c.class_names or [str(i) for i in range(len(c.confusion_matrix or c.precision_per_class))]
        if c.confusion_matrix:
            inner.append(Figure(f"confusion_{e.name}", plots.confusion(c.confusion_matrix, names),
                                "Rows: true class; columns: predicted. Colour: share of the true class."))
        if c.precision_per_class:
            per_class = []
            for i, name in enumerate(names):
                per_class.append([name, _at(c.precision_per_class, i), _at(c.recall_per_class, i),
                                  _at(c.f1_per_class, i), str(c.support_per_class[i]) if i < len(c.support_per_class) else "—"])
            inner.append(Table.build(["class", "precision", "sensitivity", "F1", "support"], per_class))
        if not inner:
            inner.append(Text("No confusion matrix or per-class figures in this file.", "muted"))
        subtitle = f"accuracy {pct(c.accuracy)}"
        if others:
            subtitle += " · identical for " + ", ".join(o.name for o in others)
        names_here = {e.name, *(o.name for o in others)}
        fold = len(same) > 3 and not names_here & keep_open
        groups.append(Group(e.name, inner, subtitle=subtitle, layout="row", collapsed=fold))
    if any(g.collapsed for g in groups):
        blocks.append(Text("The baseline, the recommended and the most accurate runtime are open; click a name to "
                           "unfold the others.", "muted"))
    blocks += groups
    return Section("quality", "Quality — classification", blocks)


def _at(values: list[float], i: int) -> str:
    return num(values[i]) if i < len(values) else "—"
