"""Reports rendered from stored measurements: content, numbers, baseline maths, partial files, CLI, node."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from heiti.engine import Measurements, Node, Out
from heiti.engine.cli import main as heiti
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.registry import Registry
from heiti.nodes.reports import fmt
from heiti.nodes.reports.blocks import Figure, Table
from heiti.nodes.reports.compare import comparison_rows, verdict
from heiti.nodes.reports.node import ReportNode
from heiti.nodes.reports.render import render, report_from_runs
from pydantic import BaseModel, ConfigDict

from tests.report_samples import (
    CLASSIFICATION_SPECS,
    Spec,
    classification_measurements,
    write_sample_run,
)

DETECTION_SPECS = [
    Spec("torch_rt", "torch", "PyTorch", "torch", 9.0, 0.86, 1_900_000),
    Spec("ort", "onnxruntime", "ONNX Runtime", "onnx", 3.0, 0.85, 1_850_000, 3.4),
]


def raw(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def table_of(sections, section_id: str, first_column: str) -> Table:
    section = next(s for s in sections if s.id == section_id)
    return next(b for b in section.walk() if isinstance(b, Table) and b.columns[0] == first_column)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One classification run with four runtimes, rendered once for several tests."""
    root = tmp_path_factory.mktemp("single")
    files = write_sample_run(root / "run", CLASSIFICATION_SPECS, seed=4)
    report = report_from_runs([root / "run"])
    rendered = render(report, root / "out" / "report.html")
    return report, rendered, files


# --- content ---------------------------------------------------------------------------------------
def test_single_run_report_has_every_section_and_is_self_contained(single):
    report, rendered, _ = single
    html = rendered.html.read_text(encoding="utf-8")
    for section_id in ("summary", "comparison", "runtimes", "quality", "latency", "resources", "environment",
                       "graph"):
        assert f'<section id="{section_id}">' in html, section_id
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    figures = [b for s in rendered.sections for b in s.walk() if isinstance(b, Figure)]
    assert len(images) == len(figures) >= 6
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html
    # the verdict is at the top, before the comparison
    assert html.index('id="summary"') < html.index('id="comparison"')


def test_markdown_twin_links_pngs_and_raw_measurements_that_exist(single):
    report, rendered, files = single
    md = rendered.markdown.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert links and all((rendered.markdown.parent / link).is_file() for link in links)
    assert "| runtime |" in md and "## Verdict" in md
    copied = sorted(p.name for p in (rendered.files / "measurements").glob("*.json"))
    assert copied == sorted(f.name for f in files)
    for original in files:
        assert raw(rendered.files / "measurements" / original.name) == raw(original)


def test_comparison_table_numbers_match_the_files_and_speedups_use_the_baseline(single):
    report, rendered, files = single
    by_node = {raw(f)["node"]: raw(f) for f in files}
    base = by_node["torch_rt"]  # the native runtime is the default baseline
    assert report.baseline.node == "torch_rt"
    table = table_of(rendered.sections, "comparison", "runtime")
    names = [n.replace(" (baseline)", "") for n in table.column("runtime")]
    means = [by_node[n]["latency_ms"]["mean"] for n in names]
    assert means == sorted(means), "rows are sorted by mean latency"
    assert table.column("mean ms") == [fmt.ms(m) for m in means]
    assert table.column("speed-up") == [fmt.times(base["latency_ms"]["mean"] / m) for m in means]
    assert table.column("accuracy") == [fmt.pct(by_node[n]["classification"]["accuracy"]) for n in names]
    assert table.column("model size") == [fmt.size(by_node[n]["model_size_bytes"]) for n in names]
    for row in comparison_rows(report):
        data = by_node[row.entry.node]
        assert row.speedup == pytest.approx(base["latency_ms"]["mean"] / data["latency_ms"]["mean"], rel=1e-12)
        assert row.size_ratio == pytest.approx(base["model_size_bytes"] / data["model_size_bytes"], rel=1e-12)
        assert row.quality_delta == pytest.approx(
            data["classification"]["accuracy"] - base["classification"]["accuracy"], abs=1e-12)
    html = rendered.html.read_text(encoding="utf-8")
    for text in table.column("speed-up"):
        assert text in html


def test_latency_and_per_class_tables_repeat_the_files_figures(single):
    report, rendered, files = single
    by_node = {raw(f)["node"]: raw(f) for f in files}
    latency = table_of(rendered.sections, "latency", "runtime")
    for row in latency.rows:
        stats = by_node[row[0].text]["latency_ms"]
        assert [c.text for c in row[1:9]] == [fmt.ms(stats[k]) for k in
                                              ("mean", "std", "median", "p90", "p99", "min", "max", "first")]
    per_class = table_of(rendered.sections, "quality", "class")  # the first runtime's table
    first = by_node[next(e.node for e in report.entries if e.data.classification.confusion_matrix)]["classification"]
    assert per_class.column("precision") == [fmt.num(v) for v in first["precision_per_class"]]
    assert per_class.column("sensitivity") == [fmt.num(v) for v in first["recall_per_class"]]


def test_median_ranking_uses_medians_for_order_and_speedups(single, tmp_path):
    _, _, files = single
    run = files[0].parent.parent
    report = report_from_runs([run], statistic="median")
    base = raw(run / "measurements" / "torch_rt.json")["latency_ms"]["median"]
    rows = comparison_rows(report)
    medians = [raw(run / "measurements" / f"{r.entry.node}.json")["latency_ms"]["median"] for r in rows]
    assert medians == sorted(medians)
    assert [r.speedup for r in rows] == pytest.approx([base / m for m in medians], rel=1e-12)
    html = render(report, tmp_path / "median.html").html.read_text(encoding="utf-8")
    assert "ranked by median latency" in html and "Sorted by median latency" in html


def test_verdict_names_the_fastest_runtime_within_the_tolerance(tmp_path):
    specs = [Spec("torch_rt", "torch", "", "torch", 2.0, 0.97, 400_000),
             Spec("int8", "litert", "", "tflite", 0.3, 0.94, 100_000),   # fastest, loses 3 points
             Spec("tvm", "tvm", "", "tvm", 0.5, 0.965, 600_000)]         # loses half a point
    write_sample_run(tmp_path / "run", specs)
    strict = verdict(report_from_runs([tmp_path / "run"], tolerance=0.01))
    assert strict.fastest.entry.node == "int8"
    assert strict.smallest.entry.node == "int8"
    assert strict.most_accurate.entry.node == "torch_rt"
    assert strict.recommended.entry.node == "tvm"
    assert any("int8" in reason and "beyond the tolerance" in reason for reason in strict.reasons)
    lenient = verdict(report_from_runs([tmp_path / "run"], tolerance=0.05))
    assert lenient.recommended.entry.node == "int8"


def test_comparison_across_runs_labels_entries_run_slash_node(tmp_path):
    write_sample_run(tmp_path / "monday", CLASSIFICATION_SPECS[:2], seed=1)
    write_sample_run(tmp_path / "tuesday", CLASSIFICATION_SPECS[1:3], seed=2)
    report = report_from_runs([tmp_path / "monday", tmp_path / "tuesday"], baseline="tuesday")
    assert sorted(e.name for e in report.entries) == ["monday/ort", "monday/torch_rt", "tuesday/ort", "tuesday/tvm"]
    assert report.baseline.name == "tuesday/ort"  # no native runtime in that run: its first entry
    rendered = render(report, tmp_path / "cmp.html")
    html = rendered.html.read_text(encoding="utf-8")
    assert "monday/torch_rt" in html and "tuesday/tvm" in html
    rows = {r.entry.name: r for r in comparison_rows(report)}
    assert rows["tuesday/ort"].speedup == pytest.approx(1.0)
    runs = table_of(rendered.sections, "summary", "run")
    assert runs.column("run") == ["monday", "tuesday"] and runs.column("status") == ["ok", "ok"]
    assert runs.column("runtimes") == ["2", "2"]
    with pytest.raises(ValueError, match="choose one of"):
        report_from_runs([tmp_path / "monday"], baseline="nope")


def test_detection_section_shows_map_ap_per_class_and_curves(tmp_path):
    files = write_sample_run(tmp_path / "det", DETECTION_SPECS, task="detection", seed=5)
    report = report_from_runs([tmp_path / "det"])
    rendered = render(report, tmp_path / "det.html")
    html = rendered.html.read_text(encoding="utf-8")
    assert '<section id="detection">' in html and '<section id="quality">' not in html
    summary = table_of(rendered.sections, "detection", "runtime")
    by_node = {raw(f)["node"]: raw(f)["detection"] for f in files}
    assert summary.column("mAP@0.5") == [fmt.pct(by_node[n]["map50"]) for n in summary.column("runtime")]
    assert summary.column("mAP@[.5:.95]") == [fmt.pct(by_node[n]["map50_95"]) for n in summary.column("runtime")]
    # the operating threshold is the file's own choice (best F1), with the figures at that threshold
    for name, threshold, f1 in zip(summary.column("runtime"), summary.column("threshold"), summary.column("F1"),
                                   strict=True):
        curve, best = by_node[name]["map_vs_threshold"], by_node[name]["best_score_threshold"]
        assert threshold == fmt.num(best, 2)
        assert f1 == fmt.num(curve["f1"][curve["threshold"].index(best)])
    per_class = table_of(rendered.sections, "detection", "class")
    assert per_class.column("class") == ["circle", "square", "triangle"]
    assert per_class.column("ort")[0].startswith(fmt.num(by_node["ort"]["ap_per_class"]["circle"]))
    names = {b.name for s in rendered.sections for b in s.walk() if isinstance(b, Figure)}
    assert {"detection_map_vs_threshold", "detection_ap_per_class", "pr_torch_rt", "pr_ort"} <= names
    rows = {r.entry.node: r for r in comparison_rows(report)}
    assert rows["ort"].quality_name == "mAP@0.5"
    assert rows["ort"].quality_delta == pytest.approx(by_node["ort"]["map50"] - by_node["torch_rt"]["map50"])


# --- partial, old and broken files ---------------------------------------------------------------------
def test_partial_old_and_broken_files_render_what_they_hold_and_say_what_is_missing(tmp_path):
    run = tmp_path / "run"
    write_sample_run(run, CLASSIFICATION_SPECS[:1])
    (run / "measurements" / "old.json").write_text(json.dumps({
        "node": "old", "runtime": "onnxruntime",
        "latency_ms": {"mean": 0.5, "std": 0.01, "median": 0.5, "p90": 0.52, "p99": 0.6, "min": 0.45, "max": 0.7}}))
    broken = classification_measurements(CLASSIFICATION_SPECS[2]).model_dump(by_alias=True)
    broken.update(node="broken", latency_ms="fast", classification={"accuracy": 0.9, "confusion_matrix": [[3, 1], [2]]})
    (run / "measurements" / "broken.json").write_text(json.dumps(broken))
    (run / "measurements" / "garbage.json").write_text("{not json")
    with (run / "events.jsonl").open("a") as events:
        events.write(json.dumps({"type": "node_failed", "node": "tvm", "error_type": "NodeError",
                                 "message": "tvm could not load model.so", "t": 0}) + "\n")
    report = report_from_runs([run])
    rendered = render(report, tmp_path / "partial.html")
    html = rendered.html.read_text(encoding="utf-8")
    old = next(e for e in report.entries if e.node == "old")
    assert {"model_size_bytes", "classification"} <= set(old.missing)
    assert any("latencies_ms" in m for m in old.missing)
    assert any("schema version" in n for n in old.notes)
    assert "latency_ms (unreadable)" in next(e for e in report.entries if e.node == "broken").missing
    assert "Some measurements are incomplete" in html
    assert "latency_ms (unreadable)" in html and "model_size_bytes" in html
    assert "garbage.json" in html  # named as unreadable, the rest still renders
    assert "tvm failed: tvm could not load model.so" in html
    assert "0.500" in html  # the old file's latency is still shown
    # the ragged confusion matrix costs its section a note, not the report
    assert '<section id="latency">' in html


def test_report_with_eight_runtimes_and_no_graph_or_events(tmp_path):
    specs = [Spec(f"rt{i}", "onnxruntime", f"runtime {i}", "onnx", 0.2 + 0.1 * i, 0.9 + 0.01 * i, 100_000 * (i + 1))
             for i in range(8)]
    write_sample_run(tmp_path / "run", specs)
    (tmp_path / "run" / "graph.json").unlink()
    (tmp_path / "run" / "events.jsonl").unlink()
    report = report_from_runs([tmp_path / "run"])
    assert report.baseline.node == "rt0"  # no native runtime: the first
    rendered = render(report, tmp_path / "eight.html")
    assert [s.id for s in rendered.sections if s.id == "graph"] == []
    assert len(comparison_rows(report)) == 8
    html = rendered.html.read_text(encoding="utf-8")
    # every runtime predicts differently: eight per-class tables, most of them folded (no script needed)
    assert html.count("<th class=\"left\">class</th>") == 8
    assert 3 <= html.count("<details") < 8 and "<script" not in html


# --- command line ------------------------------------------------------------------------------------
def test_cli_exit_codes_and_messages(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert heiti(["report", str(missing), "--out", str(tmp_path / "r.html")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert heiti(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 1
    assert "no readable measurements" in capsys.readouterr().err
    write_sample_run(tmp_path / "a", CLASSIFICATION_SPECS[:2], seed=1)
    assert heiti(["report", str(tmp_path / "a"), "--baseline", "nope", "--out", str(tmp_path / "r.html")]) == 1
    assert "choose one of" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    write_sample_run(tmp_path / "b", CLASSIFICATION_SPECS[2:], seed=2)
    out = tmp_path / "reports" / "cmp.html"
    assert heiti(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "a/ort", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "baseline a/ort" in html and "b/tflite_int8" in html
    assert out.with_suffix(".md").is_file() and (out.parent / "cmp_files" / "measurements").is_dir()
    assert heiti(["report", str(tmp_path / "a"), "--out", str(tmp_path / "reports")]) == 0  # a folder
    assert (tmp_path / "reports" / "report.html").is_file()


# --- the node in a real run ------------------------------------------------------------------------
class SampleMeasurements(Node):
    """Test-only: writes one sample measurements file, as a runtime node would."""

    kind = "test.sample_measurements"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        index: int = 0

    outputs = {"measurements": Out(Measurements)}

    def run(self, ctx, **inputs):
        spec = CLASSIFICATION_SPECS[self.params.index]
        data = classification_measurements(spec, seed=self.params.index)
        data.node = ctx.node_id
        path = ctx.workdir / "measurements.json"
        data.save(path)
        return {"measurements": Measurements(path=path, runtime=spec.runtime)}


def test_report_node_publishes_to_the_run_folder_also_on_a_cache_hit(tmp_path):
    registry = Registry()
    registry.register(SampleMeasurements)
    registry.register(ReportNode)
    graph = Graph(name="report node test")
    for i, node_id in enumerate(("torch_rt", "ort", "tvm")):
        graph.add_node("test.sample_measurements", node_id, {"index": i})
        graph.connect((node_id, "measurements"), ("report", "measurements"))
    graph.add_node("report.html", "report", {"baseline": "ort", "accuracy_drop_tolerance": 0.02})
    executor = Executor(registry, cache_dir=tmp_path / "cache")
    first = executor.run(graph, tmp_path / "run1")
    assert first.status == "ok", first.errors
    html = (tmp_path / "run1" / "report.html").read_text(encoding="utf-8")
    assert "Heiti report — report node test" in html and "baseline ort" in html
    assert "tolerance 2.00 pt" in html
    assert (tmp_path / "run1" / "report.md").is_file()
    assert len(list((tmp_path / "run1" / "report_files" / "measurements").glob("*.json"))) == 3
    assert '<section id="graph">' in html  # the node drew its own run's graph
    second = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / "run2")
    assert second.states["report"] == "cached"
    assert (tmp_path / "run2" / "report.html").read_text(encoding="utf-8") == html
    assert (tmp_path / "run2" / "report_files").is_dir()


def test_report_node_title_and_failures_come_from_its_cache_key_not_the_run_folder(tmp_path):
    """Renaming the graph re-runs the report with the new title (upstream stays cached); an
    unchanged graph, failed branch included, restores it; graph.json is never read."""
    registry = Registry()
    registry.register(SampleMeasurements)
    registry.register(ReportNode)
    graph = Graph(name="first name")
    for node_id, index in (("torch_rt", 0), ("ort", 1), ("broken", 99)):
        graph.add_node("test.sample_measurements", node_id, {"index": index})
        graph.connect((node_id, "measurements"), ("report", "measurements"))
    graph.add_node("report.html", "report", {})

    def run(name: str, folder: str):
        result = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / folder)
        assert result.states["broken"] == "failed" and result.states["report"] in ("done", "cached")
        return result, (tmp_path / folder / "report.html").read_text(encoding="utf-8")

    first, html = run("first name", "run1")
    assert "Heiti report — first name" in html
    assert "broken failed: list index out of range" in html
    (tmp_path / "run1" / "graph.json").write_text("{}", encoding="utf-8")  # not what the report reads

    again, html_again = run("first name", "run2")
    assert again.states["report"] == "cached" and html_again == html

    graph.name = "second name"
    renamed, html_renamed = run("second name", "run3")
    assert renamed.states["report"] == "done" and renamed.states["ort"] == "cached"
    assert "Heiti report — second name" in html_renamed and "first name" not in html_renamed


def test_report_node_rejects_an_unknown_baseline_with_a_clear_error(tmp_path):
    registry = Registry()
    registry.register(SampleMeasurements)
    registry.register(ReportNode)
    graph = Graph(name="bad baseline")
    graph.add_node("test.sample_measurements", "ort", {"index": 1})
    graph.add_node("report.html", "report", {"baseline": "tvm"})
    graph.connect(("ort", "measurements"), ("report", "measurements"))
    result = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
    assert result.states["report"] == "failed"
    assert "baseline" in result.errors["report"] and "ort" in result.errors["report"]


def test_remote_runtime_shows_device_timing_device_resources_and_device_environment(tmp_path):
    import numpy as np
    from heiti.engine.events import JsonlWriter, NodeMetric
    from heiti.engine.measurements import TargetInfo

    from tests.report_samples import latency_stats

    run = tmp_path / "run"
    write_sample_run(run, CLASSIFICATION_SPECS[:2])
    remote = classification_measurements(CLASSIFICATION_SPECS[1], seed=9)
    remote.node = "ort_board"
    remote.target = TargetInfo(kind="tcp", address="127.0.0.1:7070",
                               device={"hostname": "board", "machine": "aarch64", "cpu_count": 4, "protocol": 1})
    remote.device_latency_ms = latency_stats(np.full(50, 0.25), first=1.0)
    remote.save(run / "measurements" / "ort_board.json")
    writer = JsonlWriter(run / "events.jsonl")
    for i, (cpu, rss) in enumerate([(40.0, 90.0), (55.0, 95.0), (60.0, 97.0)]):
        writer(NodeMetric(node="ort_board", name="cpu_percent", value=cpu, x=10 + i * 0.5, source="board"))
        writer(NodeMetric(node="ort_board", name="rss_mb", value=rss, x=10 + i * 0.5, source="board"))
    writer.close()
    report = report_from_runs([run])
    rendered = render(report, tmp_path / "remote.html")
    device = next(b for s in rendered.sections if s.id == "latency" for b in s.walk()
                  if isinstance(b, Table) and "device mean" in b.columns)
    assert device.column("runtime") == ["ort_board"] and device.column("device mean") == [fmt.ms(0.25)]
    resources = table_of(rendered.sections, "resources", "runtime")
    row = next(r for r in resources.rows if r[0].text.startswith("ort_board"))
    assert row[0].text == "ort_board (board)" and row[2].text == "60" and row[4].text == "97"
    environment = table_of(rendered.sections, "environment", "")
    assert "ort_board" in environment.columns
    column = environment.columns.index("ort_board")
    values = {r[0].text: r[column].text for r in environment.rows}
    assert values["machine"] == "aarch64" and values["target"] == "tcp 127.0.0.1:7070" and "protocol" not in values


def test_importing_the_report_modules_does_not_import_matplotlib_or_jinja(tmp_path):
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, heiti.nodes.reports as p\n"
            "for m in pkgutil.walk_packages(p.__path__, 'heiti.nodes.reports.'): importlib.import_module(m.name)\n"
            "print(sorted(m for m in ('matplotlib', 'jinja2', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
