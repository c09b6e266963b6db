"""Detection quality: mAP@0.5 and mAP@[.5:.95] per runtime, AP per class, precision-recall curves
and mAP against the score threshold (to choose the threshold to deploy with)."""

from __future__ import annotations

import numpy as np
from heiti.nodes.reports import plots
from heiti.nodes.reports.blocks import Cell, Figure, Group, Section, Table
from heiti.nodes.reports.collect import Entry, Report
from heiti.nodes.reports.compare import comparison_rows
from heiti.nodes.reports.fmt import num, pct, points


def _classes(entries: list[Entry]) -> list[str]:
    names: list[str] = []
    for e in entries:
        q = e.data.detection
        for name in list(q.class_names) + list(q.ap_per_class) + list(q.ap50_95_per_class):
            if name not in names:
                names.append(name)
    return names


def _operating_point(q) -> dict[str, float] | None:
    """The threshold to deploy with and the figures there: the file's choice (best F1) when it names
    one, else the threshold with the highest mAP@0.5."""
    curve = q.map_vs_threshold
    thr, values = curve.get("threshold", []), curve.get("map50", [])
    if not thr or len(thr) != len(values):
        return None
    named = getattr(q, "best_score_threshold", None)
    if isinstance(named, int | float):
        i = int(np.argmin(np.abs(np.asarray(thr, float) - float(named))))
    else:
        i = int(np.argmax(curve.get("f1") or values))
    point = {"threshold": float(thr[i]), "map50": float(values[i])}
    for key in ("precision", "recall", "f1"):
        if len(curve.get(key) or []) == len(thr):
            point[key] = float(curve[key][i])
    return point


def _extra(q, name: str) -> str:
    value = getattr(q, name, None)
    return str(value) if isinstance(value, int | float) else "—"


def build(report: Report) -> Section | None:
    entries = [e for e in report.entries if e.data.detection is not None]
    if not entries:
        return None
    rows = {r.entry.name: r for r in comparison_rows(report)}
    table = []
    for e in entries:
        q = e.data.detection
        r = rows[e.name]
        tone = "" if r.within_tolerance is None or r.is_baseline else ("good" if r.within_tolerance else "bad")
        op = _operating_point(q) or {}
        table.append([Cell(e.name, "baseline" if r.is_baseline else ""), pct(q.map50), pct(q.map50_95),
                      num(q.mean_iou), num(op.get("threshold"), 2), num(op.get("precision")), num(op.get("recall")),
                      num(op.get("f1")), pct(op.get("map50")), _extra(q, "images"), _extra(q, "ground_truth_boxes"), _extra(q, "detections"),
                      Cell("baseline" if r.is_baseline else points(r.quality_delta), tone)])
    blocks: list = [Table.build(
        ["runtime", "mAP@0.5", "mAP@[.5:.95]", "mean IoU", "threshold", "precision", "recall", "F1",
         "mAP@0.5 there", "images", "true boxes", "detections", "Δ mAP@0.5"], table,
        caption="COCO-style 101-point interpolated AP; mean IoU of matched detections. Threshold: the score "
                "threshold to deploy with (best F1 at IoU 0.5), with precision, recall, F1 and mAP@0.5 there.")]

    classes = _classes(entries)
    if classes and any(e.data.detection.ap_per_class for e in entries):
        ap_rows = []
        for name in classes:
            row = [name]
            for e in entries:
                q = e.data.detection
                ap, ap_coco = q.ap_per_class.get(name), q.ap50_95_per_class.get(name)
                row.append(num(ap) + (f" / {num(ap_coco)}" if ap_coco is not None else ""))
            ap_rows.append(row)
        blocks.append(Table.build(["class"] + [e.name for e in entries], ap_rows,
                                  caption="AP@0.5 / AP@[.5:.95] per class."))
        series = [{"label": e.name, "color": e.color,
                   "values": [e.data.detection.ap_per_class.get(c, 0.0) for c in classes]}
                  for e in entries if e.data.detection.ap_per_class]
        blocks.append(Figure("detection_ap_per_class", plots.grouped_bars(classes, series, "AP@0.5 (%)",
                                                                          "AP@0.5 per class")))

    curves: list[dict] = []
    for e in entries:
        q = e.data.detection
        op = _operating_point(q)
        if op is None:
            continue
        curve = {k: v for k, v in q.map_vs_threshold.items() if isinstance(v, list)}
        twin = next((c for c in curves if c["curve"] == curve), None)
        if twin is not None:  # identical curves would hide each other: one line, both names
            twin["label"] += f" = {e.name}"
            continue
        curves.append({"label": e.name, "color": e.color, "curve": curve, "best": op["threshold"], **curve})
    if curves:
        blocks.append(Figure("detection_map_vs_threshold", plots.map_vs_threshold(curves),
                             "Detections below the threshold are dropped before matching. mAP only falls as the "
                             "threshold rises; the dot marks the operating threshold (best F1)."))

    same: dict[str, list[Entry]] = {}
    for e in entries:
        if e.data.detection.pr_curves:
            same.setdefault(repr(sorted(e.data.detection.pr_curves.items())), []).append(e)
    groups = []
    for e, *others in same.values():
        q = e.data.detection
        subtitle = f"precision-recall at IoU 0.5 · mAP@0.5 {pct(q.map50)}"
        if others:
            subtitle += " · identical for " + ", ".join(o.name for o in others)
        groups.append(Group(e.name, [Figure(f"pr_{e.name}", plots.pr_curves(q.pr_curves, q.ap_per_class))],
                            subtitle=subtitle))
    if groups:
        blocks.append(Group("", groups, layout="grid"))
    return Section("detection", "Quality — detection", blocks)
