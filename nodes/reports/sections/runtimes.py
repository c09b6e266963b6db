"""One card per runtime: what ran, where, on what, how big, how long it took to prepare."""

from __future__ import annotations

from typing import Any

from heiti.nodes.reports.blocks import Group, KeyValues, Note, Section
from heiti.nodes.reports.collect import Entry, Report
from heiti.nodes.reports.compare import tuning, tuning_text
from heiti.nodes.reports.fmt import ms, pct, seconds, size


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "×".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
    return str(value)


def summary_items(entry: Entry) -> list[tuple[str, str]]:
    d = entry.data
    items = [("runtime", d.runtime or "—")]
    if entry.run and entry.name != entry.node:
        items.append(("run", entry.run))
    items += [("model format", d.model_format or "—"), ("model size", size(d.model_size_bytes))]
    if d.model_gzip_bytes:
        items.append(("gzip'ed (level 6)", size(d.model_gzip_bytes)))
    made = [f"{k} {_scalar(d.model_meta[k])}" for k in ("quantization", "sparsity", "clusters") if d.model_meta.get(k)]
    if made:
        items.append(("model", ", ".join(made)))
    if d.compile_time_s is not None:
        items.append(("compile / convert time", seconds(d.compile_time_s)))
    if tuning(entry) is not None:
        items.append(("tuning", tuning_text(entry)))
    for step in d.pipeline:
        node, kind = step.get("node") or "", step.get("kind") or ""
        items.append((f"  {node or kind or 'step'}", (f"{kind} · " if kind and node else "") + seconds(step.get("seconds"))))
    t = d.target
    target = f"{t.kind} {t.address}".strip()
    cpu = t.device.get("cpu") or t.device.get("cpu_model") or t.device.get("machine")
    emulated = f", emulated ({t.device.get('emulator') or 'emulator'})" if t.device.get("emulated") else ""
    items.append(("target", target + (f" — {cpu}" if cpu else "") + emulated))
    if d.dataset:
        items.append(("dataset", ", ".join(f"{k} {_scalar(v)}" for k, v in d.dataset.items()
                                           if v not in (None, "", []) and k != "class_names")))
    items.append(("task", d.task))
    if d.latency_ms is not None:
        items.append(("latency mean / p99", f"{ms(d.latency_ms.mean)} / {ms(d.latency_ms.p99)} ms "
                                            f"({d.latency_ms.count or len(d.latencies_ms)} calls)"))
    if d.throughput_per_s:
        items.append(("throughput", f"{d.throughput_per_s:.1f} inferences/s"))
    if d.batch_size != 1:
        items.append(("batch size", str(d.batch_size)))
    q = entry.quality
    if q is not None:
        items.append((q[0], pct(q[1])))
    if d.options:
        shown = {k: v for k, v in d.options.items() if k != "label" and v not in (None, "", [], {})}
        items.append(("options", ", ".join(f"{k}={_scalar(v)}" for k, v in shown.items())))
    return items


def build(report: Report) -> Section | None:
    if not report.entries:
        return None
    groups = []
    for entry in report.entries:
        blocks: list = [KeyValues(summary_items(entry))]
        if entry.data.target.device.get("emulated"):
            blocks.append(Note(f"Measured on an emulated {entry.data.target.device.get('machine') or 'device'}: "
                               "the timings compare runtimes on that board, not its real speed.", "warn"))
        if entry.data.warnings:
            blocks.append(Note("Warnings from the run:", "warn", list(entry.data.warnings)))
        if entry.missing:
            blocks.append(Note("Missing from the measurements file:", "warn", list(entry.missing)))
        if entry.notes:
            blocks.append(Note("Notes:", "info", list(entry.notes)))
        subtitle = entry.runtime_label + (" · baseline" if entry is report.baseline else "")
        groups.append(Group(entry.name, blocks, subtitle=subtitle, anchor=f"rt-{entry.name}"))
    return Section("runtimes", "Runtimes", [Group("", groups, layout="grid")])
