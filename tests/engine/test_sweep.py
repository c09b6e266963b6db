"""Sweeps: grid parsing, variants, cache sharing, the Pareto front and the best variant."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.sweep import SweepError, SweepRunner, parse_grid, read_sweep, variants
from heiti.nodes.reports.sweep import best_row, pareto_front, write_sweep_report

from tests import parallelnodes

ROOT = Path(__file__).resolve().parents[2]


def test_grid_values_are_json_or_strings_and_lists_expand():
    grid = parse_grid(["a.x=1,2.5,fast", "b.y=[[1,2],[3]]", "a.x=true"])
    assert grid == {"a.x": [1, 2.5, "fast", True], "b.y": [[1, 2], [3]]}
    combos = variants({"a.x": [1, 2], "b.y": ["u", "v", "w"]})
    assert len(combos) == 6 and combos[0] == {"a.x": 1, "b.y": "u"} and combos[1] == {"a.x": 1, "b.y": "v"}
    assert len({json.dumps(c, sort_keys=True) for c in combos}) == 6
    drawn = variants({"a.x": list(range(10)), "b.y": list(range(10))}, random_n=7, seed=3)
    assert len(drawn) == 7 and len({json.dumps(c) for c in drawn}) == 7
    assert drawn == variants({"a.x": list(range(10)), "b.y": list(range(10))}, random_n=7, seed=3)


@pytest.mark.parametrize("item", ["x=1", "a.x", "a.x=", ".x=1", "nosuch.x=1"])
def test_a_bad_grid_item_is_a_clear_error(item):
    g = Graph(name="g")
    g.add_node("test.source", "a")
    with pytest.raises(SweepError, match="--grid"):
        parse_grid([item], g)


def _row(q, lat, size, v=0):
    return {"variant": v, "params": {}, "label": "r", "quality": q, "latency_ms": lat, "size_bytes": size}


def test_pareto_front_keeps_only_rows_nothing_beats_on_all_three():
    a, b, c, d = _row(0.9, 1.0, 100), _row(0.95, 2.0, 100), _row(0.9, 2.0, 100), _row(0.8, 0.5, 300)
    e = _row(None, 0.1, 1)  # no quality figure: not ranked
    assert pareto_front([a, b, c, d, e]) == [a, b, d]  # c is beaten by a
    assert best_row([a, b, c, d, e]) is b
    assert best_row([a, b, c, d], max_latency_ms=1.5) is a
    assert best_row([a, b, c, d], max_latency_ms=1.5, min_quality=0.92) is None


def _graph():
    g = Graph(name="fake sweep")
    g.add_node("ptest.stamp", "prep", {"delay": 0.0})
    g.add_node("ptest.runtime", "fast", {"accuracy": 0.90, "latency_ms": 1.0, "size_bytes": 500})
    g.add_node("ptest.runtime", "good", {"accuracy": 0.95, "latency_ms": 3.0, "size_bytes": 2000})
    g.connect(("prep", "out"), ("fast", "x"))
    g.connect(("prep", "out"), ("good", "x"))
    return g


def test_a_sweep_shares_the_cache_and_writes_its_report(registry, tmp_path):
    for cls in parallelnodes.ALL:
        registry.register(cls)
    events = []
    runner = SweepRunner(lambda: Executor(registry, cache_dir=tmp_path / "cache"))
    runner.subscribe(events.append)
    combos = variants(parse_grid(["fast.latency_ms=1.0,0.5", "good.accuracy=0.95,0.97"]))
    result = runner.run(_graph(), combos, tmp_path / "sweep")
    assert result.status == "ok" and len(result.variants) == 4
    done = [e.node for e in events if e.type == "node_finished"]
    assert done.count("prep") == 1  # later variants restored it from the cache
    assert done.count("fast") == 2 and done.count("good") == 2
    assert [v["params"] for v in read_sweep(tmp_path / "sweep")["variants"]] == combos

    report = write_sweep_report(tmp_path / "sweep", max_latency_ms=2.0)
    assert len(report.rows) == 8
    # variants in grid order, the last param fastest: (1.0, .95), (1.0, .97), (0.5, .95), (0.5, .97)
    assert (report.best["variant"], report.best["node"], report.best["latency_ms"]) == (2, "fast", 0.5)
    front = {(r["variant"], r["node"]) for r in pareto_front(report.rows)}
    assert front == {(2, "fast"), (3, "fast"), (1, "good"), (3, "good")}  # 0.5 ms beats 1.0 ms; 0.97 beats 0.95
    md = report.markdown.read_text()
    assert "Best under mean latency ≤ 2.0 ms: variant 3" in md and md.count("✓") == 3 and "★ best" in md
    assert "<img" in report.html.read_text()


def test_the_sweep_command_runs_variants_in_workers(tmp_path):
    graph = tmp_path / "g.json"
    _graph().save(graph)
    env = dict(os.environ, HEITI_PLUGINS="tests.testnodes,tests.parallelnodes", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "heiti.engine.cli", "sweep", str(graph), "--grid", "good.accuracy=0.96,0.98",
           "--out", str(tmp_path / "s"), "--cache", str(tmp_path / "c"), "--jobs", "2", "--min-accuracy", "0.97"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "best: variant 2 on good" in proc.stderr
    assert (tmp_path / "s" / "report.html").is_file() and (tmp_path / "s" / "variants" / "01" / "events.jsonl").is_file()
    bad = subprocess.run([*cmd[:5], "--grid", "nosuch.p=1"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "no node 'nosuch'" in bad.stderr


def _span(run_dir, node):
    from heiti.engine.events import read_events

    events = read_events(Path(run_dir) / "events.jsonl")
    start = next(e.t for e in events if e.type == "node_started" and e.node == node)
    end = next(e.t for e in events if e.type == "node_finished" and e.node == node)
    return start, end


def test_variants_at_once_run_together_after_the_first(registry, tmp_path):
    for cls in parallelnodes.ALL:
        registry.register(cls)
    g = Graph(name="together")
    g.add_node("ptest.stamp", "s", {"delay": 0.5})
    runner = SweepRunner(lambda: Executor(registry, cache_dir=tmp_path / "cache"), at_once=2)
    result = runner.run(g, variants(parse_grid(["s.delay=0.5,0.51,0.52"])), tmp_path / "sweep")
    assert result.status == "ok"
    first, second, third = (_span(v.run_dir, "s") for v in result.variants)
    assert first[1] <= min(second[0], third[0])  # the first ran alone
    assert second[0] < third[1] and third[0] < second[1]  # the others overlapped


def test_cancelling_a_sweep_stops_the_variant_and_leaves_the_rest(registry, tmp_path):
    import threading

    for cls in parallelnodes.ALL:
        registry.register(cls)
    g = Graph(name="stop")
    g.add_node("test.slow", "slow", {"steps": 3000, "step_s": 0.01})
    runner = SweepRunner(lambda: Executor(registry, cache_dir=tmp_path / "cache"))
    runner.subscribe(lambda e: e.type == "node_progress" and threading.Timer(0.2, runner.cancel).start())
    result = runner.run(g, variants(parse_grid(["slow.steps=3000,3001,3002"])), tmp_path / "sweep")
    assert [v.status for v in result.variants] == ["cancelled", "pending", "pending"]
    assert result.status == "cancelled"
