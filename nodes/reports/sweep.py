"""The sweep report: every variant × runtime, the Pareto front, the best one under constraints.

It reads what the runs left behind (`sweep.json` and each variant's `measurements/*.json`), so it
can be rendered again at any time. Quality is accuracy for classification and mAP@0.5 for
detection; higher is better. Latency (mean ms) and model size (bytes) are better lower.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heiti.engine.graph import atomic_write_text
from heiti.engine.measurements import read_measurements


@dataclass
class SweepReport:
    html: Path
    markdown: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None


def collect_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per (variant, runtime node) that wrote a measurements file."""
    from heiti.engine.sweep import read_sweep

    rows = []
    for variant in read_sweep(sweep_dir)["variants"]:
        folder = Path(variant["run_dir"]) / "measurements"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = read_measurements(path).data
            except (OSError, ValueError):
                continue
            quality, quality_name = None, ""
            if data.classification is not None:
                quality, quality_name = data.classification.accuracy, "accuracy"
            elif data.detection is not None:
                quality, quality_name = data.detection.map50, "mAP@0.5"
            rows.append({
                "variant": variant["index"], "params": variant["params"], "status": variant["status"],
                "node": data.node or path.stem, "label": data.label or data.node or path.stem,
                "runtime": data.runtime, "quality": quality, "quality_name": quality_name,
                "latency_ms": data.latency_ms.mean if data.latency_ms else None,
                "size_bytes": data.model_size_bytes, "run_dir": variant["run_dir"],
            })
    return rows


def _complete(row: dict[str, Any]) -> bool:
    return row["quality"] is not None and row["latency_ms"] is not None


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """a is at least as good as b on quality, latency and size, and better on one."""
    size_a = a["size_bytes"] if a["size_bytes"] is not None else float("inf")
    size_b = b["size_bytes"] if b["size_bytes"] is not None else float("inf")
    no_worse = a["quality"] >= b["quality"] and a["latency_ms"] <= b["latency_ms"] and size_a <= size_b
    better = a["quality"] > b["quality"] or a["latency_ms"] < b["latency_ms"] or size_a < size_b
    return no_worse and better


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on quality (up), latency (down) and size (down) at once."""
    complete = [r for r in rows if _complete(r)]
    return [r for r in complete if not any(_dominates(o, r) for o in complete if o is not r)]


def best_row(rows: list[dict[str, Any]], max_latency_ms: float | None = None,
             min_quality: float | None = None) -> dict[str, Any] | None:
    """Highest quality within the constraints; ties go to the faster, then the smaller."""
    fits = [r for r in rows if _complete(r)
            and (max_latency_ms is None or r["latency_ms"] <= max_latency_ms)
            and (min_quality is None or r["quality"] >= min_quality)]
    if not fits:
        return None
    return min(fits, key=lambda r: (-r["quality"], r["latency_ms"],
                                    r["size_bytes"] if r["size_bytes"] is not None else float("inf")))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def _plot(rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> bytes | None:
    points = [r for r in rows if _complete(r)]
    if not points:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter([r["latency_ms"] for r in points], [r["quality"] for r in points], s=22, c="#9aa5b1",
               label="variant × runtime")
    ax.scatter([r["latency_ms"] for r in front], [r["quality"] for r in front], s=40, c="#d9480f",
               label="Pareto front (quality, latency, size)")
    labels: dict[tuple[float, float], list[str]] = {}  # rows on the same spot share one label
    for r in front:
        labels.setdefault((r["latency_ms"], r["quality"]), []).append(f"v{r['variant'] + 1} {r['label']}")
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names[:4]) + (" …" if len(names) > 4 else ""), (x, y), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("mean latency (ms)")
    ax.set_ylabel(points[0]["quality_name"] or "quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


COLUMNS = ("variant", "params", "runtime", "quality", "latency ms", "size KB", "front")


def _table(rows: list[dict[str, Any]], front_ids: set[int], best: dict[str, Any] | None) -> list[list[str]]:
    out = []
    for r in rows:
        mark = "★ best" if best is r else ("✓" if id(r) in front_ids else "")
        out.append([str(r["variant"] + 1), _params_text(r["params"]), r["label"], _fmt(r["quality"], 4),
                    _fmt(r["latency_ms"]), _fmt(r["size_bytes"] / 1024 if r["size_bytes"] else None, 1), mark])
    return out


def write_sweep_report(sweep_dir: Path, max_latency_ms: float | None = None,
                       min_quality: float | None = None) -> SweepReport:
    """Write `report.html` and `report.md` into the sweep folder."""
    from heiti.engine.sweep import read_sweep

    sweep_dir = Path(sweep_dir)
    meta = read_sweep(sweep_dir)
    rows = collect_rows(sweep_dir)
    front = pareto_front(rows)
    best = best_row(rows, max_latency_ms, min_quality)
    table = _table(rows, {id(r) for r in front}, best)
    constraints = []
    if max_latency_ms is not None:
        constraints.append(f"mean latency ≤ {max_latency_ms} ms")
    if min_quality is not None:
        constraints.append(f"quality ≥ {min_quality}")
    failed = [v for v in meta["variants"] if v["status"] != "ok"]
    title = f"Sweep: {meta['graph']}"
    if best is not None:
        verdict = (f"Best{' under ' + ' and '.join(constraints) if constraints else ''}: variant "
                   f"{best['variant'] + 1} ({_params_text(best['params'])}) on {best['label']} — "
                   f"{best['quality_name']} {_fmt(best['quality'], 4)}, {_fmt(best['latency_ms'])} ms, "
                   f"{_fmt(best['size_bytes'] / 1024 if best['size_bytes'] else None, 1)} KB.")
    else:
        verdict = "No variant meets " + (" and ".join(constraints) if constraints else "the report's needs (no measurements)") + "."
    notes = [f"{len(meta['variants'])} variant(s), {len(rows)} measurement(s); the Pareto front keeps the rows "
             "that no other row beats on quality, latency and size at once.",
             "Each runtime measured alone (with --jobs nothing runs beside a measurement; on Ray, alone on its "
             "board), so latencies are comparable."]
    notes += [f"Variant {v['index'] + 1} ({_params_text(v['params'])}): {v['status']} {v['error'][:300]}" for v in failed]

    md = [f"# {title}", "", verdict, "", *[f"- {n}" for n in notes], "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table]
    md_path = sweep_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    png = _plot(rows, front)
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", f"<p class='verdict'>{e(verdict)}</p>",
            "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"]
    if png:
        body.append(f"<img alt='quality against latency' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    body.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>" + "".join(
        "<tr" + (" class='front'" if row[-1] else "") + ">" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
        for row in table) + "</table>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}tr.front{background:#fff4e6}"
             ".verdict{font-size:1.1em;font-weight:600}img{max-width:100%}")
    html_path = sweep_dir / "report.html"
    atomic_write_text(html_path, f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
                                 f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return SweepReport(html=html_path, markdown=md_path, rows=rows, best=best)
