"""Node states: carried on events, written to events.jsonl, reduced one way by every consumer."""

from __future__ import annotations

import io
import json
import threading

from heiti.engine.console import RunView
from heiti.engine.events import NodeFailed, NodeSkipped, RunStarted, read_events
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.states import NodeState, reduce, states_of
from rich.console import Console


def _mixed_graph() -> Graph:
    """One node done, one failed, one skipped because of it, and an independent branch."""
    g = Graph(name="mixed")
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.add", "sum")
    g.add_node("test.fail", "f")
    g.add_node("test.add", "after")
    g.connect(("a", "out"), ("sum", "values"))
    g.connect(("f", "out"), ("after", "values"))
    return g


def test_run_result_file_and_console_agree_on_every_state(registry, tmp_path):
    view = RunView(Console(file=io.StringIO()))
    ex = Executor(registry, cache_dir=tmp_path / "cache")
    ex.subscribe(view)
    result = ex.run(_mixed_graph(), tmp_path / "r1")
    assert result.states == {"a": "done", "sum": "done", "f": "failed", "after": "skipped"}
    assert all(isinstance(s, NodeState) for s in result.states.values())
    from_file = states_of(read_events(tmp_path / "r1" / "events.jsonl"))
    assert from_file == result.states
    assert {n: v.state for n, v in view.nodes.items()} == result.states
    lines = [json.loads(line) for line in (tmp_path / "r1" / "events.jsonl").read_text().splitlines()]
    assert {line["state"] for line in lines if line["type"].startswith("node_") and "state" in line} == {
        "running", "done", "failed", "skipped"}

    again = Executor(registry, cache_dir=tmp_path / "cache").run(_mixed_graph(), tmp_path / "r2")
    assert again.states["a"] == NodeState.CACHED
    assert states_of(read_events(tmp_path / "r2" / "events.jsonl")) == again.states


def test_cancellation_is_a_state_not_a_word_in_the_reason(registry, tmp_path):
    # a node whose upstream is called "cancel_button" is skipped, not cancelled
    states: dict[str, NodeState] = {}
    reduce(states, RunStarted(graph="g", out_dir="", order=["cancel_button", "x"]))
    assert states == {"cancel_button": "pending", "x": "pending"}
    reduce(states, NodeFailed(node="cancel_button", error_type="ValueError", message="cancel this"))
    assert reduce(states, NodeSkipped(node="x", reason="upstream cancel_button did not finish")) == NodeState.SKIPPED
    view = RunView(Console(file=io.StringIO()))
    view(NodeSkipped(node="x", reason="upstream cancel_button did not finish"))
    assert view.nodes["x"].state == NodeState.SKIPPED

    # a real cancellation says so on its events, whatever the reason's words
    g = Graph()
    g.add_node("test.slow", "slow", {"steps": 10_000, "step_s": 0.01})
    g.add_node("test.add", "after")
    g.connect(("slow", "out"), ("after", "values"))
    ex = Executor(registry, cache_dir=tmp_path / "c")
    started = threading.Event()
    ex.subscribe(lambda e: started.set() if e.type == "node_progress" else None)
    threading.Thread(target=lambda: (started.wait(10), ex.cancel()), daemon=True).start()
    result = ex.run(g, tmp_path / "r")
    assert result.states == {"slow": NodeState.CANCELLED, "after": NodeState.CANCELLED}
    events = read_events(tmp_path / "r" / "events.jsonl")
    assert [e.state for e in events if e.type in ("node_failed", "node_skipped")] == ["cancelled", "cancelled"]
    assert states_of(events) == result.states


def test_events_files_written_before_states_still_read(tmp_path):
    old = [
        {"type": "run_started", "t": 1.0, "graph": "g", "out_dir": "r", "order": ["a", "b", "c", "d", "e"]},
        {"type": "node_started", "t": 1.1, "node": "a", "kind": "test.source", "key": "k"},
        {"type": "node_finished", "t": 1.2, "node": "a", "duration_s": 0.1, "summary": {}},
        {"type": "node_cached", "t": 1.3, "node": "b", "key": "k2", "summary": {}},
        {"type": "node_failed", "t": 1.4, "node": "c", "error_type": "ValueError", "message": "bad"},
        {"type": "node_failed", "t": 1.5, "node": "d", "error_type": "Cancelled", "message": "cancelled by the user"},
        {"type": "node_skipped", "t": 1.6, "node": "e", "reason": "upstream c did not finish"},
        {"type": "run_finished", "t": 1.7, "status": "cancelled", "duration_s": 0.7},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in old))
    assert states_of(read_events(path)) == {"a": "done", "b": "cached", "c": "failed", "d": "cancelled", "e": "skipped"}


def test_a_state_from_a_newer_heiti_falls_back_to_the_events_own(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"type": "node_skipped", "t": 1.0, "node": "x", "reason": "r", "state": "paused"}) + "\n")
    (event,) = read_events(path)
    assert event.state == NodeState.SKIPPED


def test_the_report_shows_the_reduced_states(registry, tmp_path):
    from heiti.nodes.reports.collect import RunInfo
    from heiti.nodes.reports.sections.graph import node_states

    result = Executor(registry, cache_dir=tmp_path / "cache").run(_mixed_graph(), tmp_path / "r")
    run = RunInfo(name="r", events=read_events(tmp_path / "r" / "events.jsonl"))
    states, durations = node_states(run)
    assert states == result.states and set(durations) == {"a", "sum"}
