"""The parallel executor: overlap, exclusive measuring nodes, crash isolation, cancel, events."""

import threading
import time

import pytest
from heiti.engine.events import read_events
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph

from tests import parallelnodes


@pytest.fixture
def preg(registry):
    for cls in parallelnodes.ALL:
        registry.register(cls)
    return registry


def _run(reg, graph, tmp_path, name, jobs, events=None, **kw):
    ex = Executor(reg, cache_dir=tmp_path / "cache", jobs=jobs, **kw)
    if events is not None:
        ex.subscribe(events.append)
    return ex.run(graph, tmp_path / name)


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def _pair(delay=1.2):
    g = Graph(name="pair")
    g.add_node("ptest.stamp", "s1", {"delay": delay})
    g.add_node("ptest.stamp", "s2", {"delay": delay + 0.01})  # another cache key
    return g


def test_two_slow_independent_nodes_overlap_with_two_jobs(preg, tmp_path):
    result = _run(preg, _pair(), tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    s1, s2 = result.outputs["s1"]["out"].value, result.outputs["s2"]["out"].value
    assert _overlap(s1, s2)
    assert len({s1[2], s2[2]}) == 2  # each in its own worker process


def test_one_job_runs_in_process_one_after_the_other(preg, tmp_path):
    import os

    result = _run(preg, _pair(0.3), tmp_path, "r", jobs=1, use_cache=False)
    s1, s2 = result.outputs["s1"]["out"].value, result.outputs["s2"]["out"].value
    assert not _overlap(s1, s2)
    assert s1[2] == s2[2] == os.getpid()


def test_an_exclusive_node_never_overlaps_another(preg, tmp_path):
    g = Graph(name="excl")
    for i in range(3):
        g.add_node("ptest.stamp", f"s{i}", {"delay": 0.4})
    g.add_node("ptest.exclusive", "measure", {"delay": 0.4})
    g.add_node("ptest.stamp", "after", {"delay": 0.4})
    g.connect(("s0", "out"), ("after", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    spans = {n: result.outputs[n]["out"].value for n in result.outputs}
    others = [spans[n] for n in spans if n != "measure"]
    assert not any(_overlap(spans["measure"], other) for other in others)
    assert any(_overlap(a, b) for i, a in enumerate(others) for b in others[i + 1:])  # the rest did overlap


def test_a_segfault_fails_only_its_node(preg, tmp_path):
    g = Graph(name="crash")
    g.add_node("ptest.segfault", "crash")
    g.add_node("test.add", "after")
    g.connect(("crash", "out"), ("after", "values"))
    g.add_node("ptest.stamp", "fine", {"delay": 0.2})
    result = _run(preg, g, tmp_path, "r", jobs=2)
    assert result.states == {"crash": "failed", "after": "skipped", "fine": "done"}
    assert "SIGSEGV" in result.errors["crash"]
    assert result.exit_code == 2


def test_workers_are_reused_by_descendants_and_replaced_after_a_crash(preg, tmp_path):
    g = Graph(name="chain")
    g.add_node("ptest.stamp", "first", {"delay": 0.0})
    g.add_node("ptest.stamp", "second", {"delay": 0.0})
    g.add_node("ptest.segfault", "crash")
    g.connect(("first", "out"), ("second", "x"))
    g.add_node("ptest.stamp", "later", {"delay": 0.0})
    g.connect(("second", "out"), ("later", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.states == {"first": "done", "second": "done", "crash": "failed", "later": "done"}
    pids = {n: result.outputs[n]["out"].value[2] for n in ("first", "second", "later")}
    assert pids["first"] == pids["second"] == pids["later"]  # the chain stayed in its worker


def test_a_worker_killed_while_idle_is_not_given_a_node(preg, tmp_path):
    import os
    import signal

    from heiti.engine.events import EventBus
    from heiti.engine.jobs import make_job
    from heiti.engine.workers import ProcessLauncher

    launcher = ProcessLauncher(EventBus(), size=1)
    try:
        cls = preg.get("ptest.stamp")
        job = lambda n: make_job(n, cls, cls.Params(delay=0.0), {}, tmp_path / n, tmp_path, time.perf_counter())  # noqa: E731
        first = launcher.start(job("one"))
        while not launcher.poll(0.5):
            pass
        assert first.result["result"] == "done"
        os.kill(first.worker.process.pid, signal.SIGKILL)
        first.worker.process.join(5)
        second = launcher.start(job("two"), prefer={"one"})
        finished = []
        while not finished:
            finished = launcher.poll(0.5)
        assert second.result["result"] == "done" and second.worker is not first.worker
    finally:
        launcher.close()


def test_worker_events_reach_events_jsonl_and_the_cache_serves_a_rerun(preg, tmp_path):
    events = []
    result = _run(preg, _pair(0.1), tmp_path, "r1", jobs=2, events=events)
    assert result.status == "ok"
    written = read_events(tmp_path / "r1" / "events.jsonl")
    for node in ("s1", "s2"):
        kinds = [e.type for e in written if getattr(e, "node", None) == node]
        assert kinds[0] == "node_started" and kinds[-1] == "node_finished"
        assert "node_progress" in kinds and "node_metric" in kinds  # sent by the worker
    assert [e.type for e in events] == [e.type for e in written]
    again = _run(preg, _pair(0.1), tmp_path, "r2", jobs=2)
    assert again.states == {"s1": "cached", "s2": "cached"}
    assert again.outputs["s1"]["out"].value == result.outputs["s1"]["out"].value


def _cancel_when_started(ex, node):
    def watch(event):
        if event.type == "node_progress" and event.node == node:
            threading.Timer(0.3, ex.cancel).start()

    ex.subscribe(watch)


def test_cancel_stops_workers_cooperatively_then_by_force(preg, tmp_path, monkeypatch):
    import heiti.engine.scheduler as scheduler

    monkeypatch.setattr(scheduler, "CANCEL_GRACE_S", 1.0)
    g = Graph(name="cancel")
    g.add_node("test.slow", "polite", {"steps": 6000, "step_s": 0.01})
    g.add_node("ptest.stubborn", "stubborn")
    g.add_node("test.add", "after")
    g.connect(("polite", "out"), ("after", "values"))
    ex = Executor(preg, cache_dir=tmp_path / "cache", jobs=2)
    _cancel_when_started(ex, "stubborn")
    t = time.monotonic()
    result = ex.run(g, tmp_path / "r")
    assert time.monotonic() - t < 20  # the stubborn node sleeps 60 s: it was terminated
    assert result.status == "cancelled" and result.exit_code == 130
    assert result.states == {"polite": "cancelled", "stubborn": "cancelled", "after": "cancelled"}


def test_a_worker_grown_past_its_memory_limit_is_retired(preg, tmp_path, monkeypatch):
    import heiti.engine.workers as workers

    monkeypatch.setattr(workers, "WORKER_RSS_LIMIT", 1)  # every worker is "too big" after its node
    g = Graph(name="chain")
    g.add_node("ptest.stamp", "first", {"delay": 0.0})
    g.add_node("ptest.stamp", "second", {"delay": 0.0})
    g.connect(("first", "out"), ("second", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok"
    assert result.outputs["first"]["out"].value[2] != result.outputs["second"]["out"].value[2]


def test_an_idle_worker_imports_ahead_for_a_waiting_node_which_then_runs_there(preg, tmp_path):
    g = Graph(name="warm")
    g.add_node("ptest.stamp", "slow", {"delay": 1.5})
    g.add_node("ptest.stamp", "next", {"delay": 0.1})
    g.add_node("ptest.warm", "warm", {"delay": 0.1})
    g.connect(("slow", "out"), ("next", "x"))
    g.connect(("next", "out"), ("warm", "x"))
    events = []
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False, events=events)
    assert result.status == "ok", result.errors
    start, _end, pid, before, imported_at = result.outputs["warm"]["out"].value
    slow = result.outputs["slow"]["out"].value
    assert before, "the node's imports were not made ahead"
    assert imported_at < slow[1] < start  # made while `slow` still ran, long before `warm` started
    assert pid != slow[2]  # by the other, idle worker, which then ran it
    assert any(e.type == "node_log" and e.node == "warm" and "imports made ahead" in e.message for e in events)


def test_no_worker_imports_ahead_while_a_measurement_runs(preg, tmp_path):
    g = Graph(name="quiet")
    g.add_node("ptest.exclusive", "measure", {"delay": 1.2})
    g.add_node("ptest.stamp", "next", {"delay": 1.0})
    g.add_node("ptest.stamp", "then", {"delay": 0.1})
    g.add_node("ptest.warm", "warm", {"delay": 0.1})
    g.connect(("measure", "out"), ("next", "x"))
    g.connect(("next", "out"), ("then", "x"))
    g.connect(("then", "out"), ("warm", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    measure = result.outputs["measure"]["out"].value
    start, _end, _pid, before, imported_at = result.outputs["warm"]["out"].value
    assert not (measure[0] <= imported_at <= measure[1])
    assert before and measure[1] < imported_at < start  # made after the measurement, while `next` ran


def test_while_a_measurement_waits_for_other_work_the_idle_worker_warms_what_comes_after_it(preg, tmp_path):
    """A runtime ready early waits for quiet while a conversion runs; meanwhile the report after it
    makes its imports in the idle worker, instead of after the last measurement."""
    g = Graph(name="warm-behind")
    g.add_node("ptest.stamp", "convert", {"delay": 1.5})
    g.add_node("ptest.exclusive", "measure", {"delay": 0.2})
    g.add_node("ptest.warm", "report", {"delay": 0.1})
    g.connect(("measure", "out"), ("report", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    convert, measure = result.outputs["convert"]["out"].value, result.outputs["measure"]["out"].value
    _start, _end, _pid, before, imported_at = result.outputs["report"]["out"].value
    assert convert[1] <= measure[0]  # the measurement still ran alone
    assert before and imported_at < convert[1]  # the report's imports were made while `convert` ran


def test_a_failed_warm_up_is_tried_once_and_the_node_still_runs(preg, tmp_path):
    g = Graph(name="badwarm")
    g.add_node("ptest.stamp", "slow", {"delay": 1.0})
    g.add_node("ptest.stamp", "next", {"delay": 0.1})
    g.add_node("ptest.badwarm", "bad", {"delay": 0.1})
    g.connect(("slow", "out"), ("next", "x"))
    g.connect(("next", "out"), ("bad", "x"))
    events = []
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False, events=events)
    assert result.status == "ok", result.errors
    failures = [e for e in events if e.type == "node_log" and e.node == "bad" and "could not import ahead" in e.message]
    assert len(failures) == 1 and "no_such_module_here" in failures[0].message


def test_the_second_child_of_a_running_node_is_warmed_in_the_other_worker(preg, tmp_path):
    g = Graph(name="fan")
    g.add_node("ptest.stamp", "slow", {"delay": 1.5})
    g.add_node("ptest.stamp", "first", {"delay": 0.1})
    g.add_node("ptest.warm", "second", {"delay": 0.1})
    g.connect(("slow", "out"), ("first", "x"))
    g.connect(("slow", "out"), ("second", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    slow = result.outputs["slow"]["out"].value
    _start, _end, pid, before, imported_at = result.outputs["second"]["out"].value
    assert before and imported_at < slow[1]  # imported while its parent still ran
    assert pid != slow[2]


def test_a_sibling_waits_for_the_worker_with_its_framework_rather_than_for_one_still_importing_it(preg, tmp_path):
    """The demo's two TFLite conversions: the first follows its parent in the worker that has
    TensorFlow, the other worker (free early) imports TensorFlow ahead for the second. The second
    then starts in whichever of the two is ready first: here the first worker, long before the other
    one's import ends."""
    g = Graph(name="siblings")
    g.add_node("ptest.stamp", "busy", {"delay": 1.2})  # the other worker is free only after this
    g.add_node("ptest.slowwarm", "parent", {"delay": 0.05})
    g.add_node("ptest.slowwarm", "first", {"delay": 0.1})
    g.add_node("ptest.slowwarm", "second", {"delay": 0.11})
    g.connect(("parent", "out"), ("first", "x"))
    g.connect(("parent", "out"), ("second", "x"))
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False)
    assert result.status == "ok", result.errors
    busy, parent, first, second = (result.outputs[n]["out"].value for n in ("busy", "parent", "first", "second"))
    assert busy[2] != parent[2] and busy[1] < parent[0]  # the other worker was free (and warming) early
    # both ran where the framework already was: `second` did not queue behind the other worker's import
    assert first[2] == second[2] == parent[2]
    assert second[0] >= first[1] - 0.01  # after `first`, in the same worker


def test_a_waiting_node_prepares_ahead_with_the_inputs_it_has_in_the_worker_that_then_runs_it(preg, tmp_path):
    g = Graph(name="prep")
    g.add_node("ptest.stamp", "early", {"delay": 0.0})
    g.add_node("ptest.stamp", "slow", {"delay": 1.5})
    g.add_node("ptest.stamp", "next", {"delay": 0.1})
    g.add_node("ptest.prep", "prep", {"delay": 0.1})
    g.connect(("early", "out"), ("prep", "data"))
    g.connect(("slow", "out"), ("next", "x"))
    g.connect(("next", "out"), ("prep", "x"))
    events = []
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False, events=events)
    assert result.status == "ok", result.errors
    start, _end, pid, prepared = result.outputs["prep"]["out"].value
    slow = result.outputs["slow"]["out"].value
    assert prepared is not None, "prepare_ahead never ran in the worker that ran the node"
    assert prepared["ports"] == ["data"]  # only what was there: `x` was still being made
    assert prepared["data"] == result.outputs["early"]["out"].value
    assert prepared["pid"] == pid != slow[2]
    assert prepared["at"] < slow[1] < start
    assert any(e.type == "node_log" and e.node == "prep" and "inputs prepared ahead" in e.message for e in events)


def test_a_node_waits_for_memory_while_another_runs_and_says_why(preg, tmp_path, monkeypatch):
    """A reserve larger than any machine's memory: the second node waits for the first to end,
    however many jobs were asked for; the run still finishes."""
    monkeypatch.setenv("HEITI_MEMORY_RESERVE_MB", str(2**40))
    events = []
    result = _run(preg, _pair(0.6), tmp_path, "r", jobs=2, use_cache=False, events=events)
    assert result.status == "ok", result.errors
    s1, s2 = result.outputs["s1"]["out"].value, result.outputs["s2"]["out"].value
    assert not _overlap(s1, s2)
    waits = [e for e in events if e.type == "node_log" and "waiting for memory" in e.message]
    assert len(waits) == 1 and "GB kept in reserve" in waits[0].message


def _turns_graph(meet=""):
    g = Graph(name="turns")
    g.add_node("ptest.turns", "a", {"blocks": 4, "block": 0.1, "meet": meet, "peers": 2})
    g.add_node("ptest.turns", "b", {"blocks": 4, "block": 0.11, "meet": meet, "peers": 2})  # another cache key
    return g


def test_measuring_nodes_take_turns_when_interleaved_and_never_overlap(preg, tmp_path):
    (tmp_path / "meet").mkdir()
    result = _run(preg, _turns_graph(str(tmp_path / "meet")), tmp_path, "r", jobs=2, use_cache=False, interleave=True)
    assert result.status == "ok", result.errors
    a, b = result.outputs["a"]["out"].value, result.outputs["b"]["out"].value
    assert a["shared"] and b["shared"]
    spans = sorted([(s, e, "a") for s, e in a["spans"]] + [(s, e, "b") for s, e in b["spans"]])
    for (_s1, e1, _), (s2, _e2, _) in zip(spans, spans[1:], strict=False):
        assert e1 <= s2, "two turns overlapped"
    owners = "".join(o for _, _, o in spans)
    switches = sum(x != y for x, y in zip(owners, owners[1:], strict=False))
    assert switches >= 5, owners  # first asked, first served: they alternate (abababab, given both wait)


def test_without_interleave_measuring_nodes_run_one_after_the_other(preg, tmp_path):
    result = _run(preg, _turns_graph(), tmp_path, "r", jobs=2, use_cache=False)
    a, b = result.outputs["a"]["out"].value, result.outputs["b"]["out"].value
    assert not a["shared"] and not b["shared"]
    assert a["spans"][-1][1] <= b["spans"][0][0] or b["spans"][-1][1] <= a["spans"][0][0]


def test_a_cancel_lets_nodes_waiting_for_their_turn_stop(preg, tmp_path):
    g = Graph(name="turns-cancel")
    g.add_node("ptest.turns", "a", {"blocks": 40, "block": 0.25})
    g.add_node("ptest.turns", "b", {"blocks": 40, "block": 0.26})
    ex = Executor(preg, cache_dir=tmp_path / "cache", use_cache=False, jobs=2, interleave=True)
    threading.Timer(2.0, ex.cancel).start()  # both are started and taking turns by then
    t = time.monotonic()
    result = ex.run(g, tmp_path / "r")
    assert time.monotonic() - t < 10  # 20 s of turns were asked for
    assert result.status == "cancelled" and set(result.states.values()) == {"cancelled"}


def test_a_measuring_node_that_does_not_take_turns_holds_the_machine_for_its_whole_run(preg, tmp_path):
    """Interleaved with a node that takes turns, a measuring node that does not (a plug-in's) runs
    as one turn: never beside the other's blocks."""
    g = Graph(name="turns-whole")
    g.add_node("ptest.turns", "a", {"blocks": 4, "block": 0.1})
    g.add_node("ptest.exclusive", "b", {"delay": 0.4})
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False, interleave=True)
    assert result.status == "ok", result.errors
    b0, b1 = result.outputs["b"]["out"].value[:2]
    for s, e in result.outputs["a"]["out"].value["spans"]:
        assert e <= b0 or b1 <= s, "a turn overlapped the node that holds the machine"


def test_a_run_the_cache_serves_whole_starts_no_worker(preg, tmp_path, monkeypatch):
    import heiti.engine.workers as workers

    pools = []
    real = workers.ProcessLauncher.__init__

    def counted(self, *args, **kwargs):
        pools.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(workers.ProcessLauncher, "__init__", counted)
    assert _run(preg, _pair(0.0), tmp_path, "r1", jobs=2).status == "ok"
    assert len(pools) == 1  # the first run needed workers
    again = _run(preg, _pair(0.0), tmp_path, "r2", jobs=2)
    assert set(again.states.values()) == {"cached"}
    assert len(pools) == 1  # the cached run made no pool, so it forked nothing and waited for nothing


def test_runtimes_in_turns_prepare_side_by_side_and_time_only_once_all_are_ready(preg, tmp_path):
    """No preparation (a framework's import, a session) runs beside a timed block, and none is made
    to wait for another runtime's turns: the first turn goes once every node started with it asked."""
    g = Graph(name="turns-prepare")
    g.add_node("ptest.turns", "quick", {"blocks": 3, "block": 0.1, "prepare": 0.1})
    g.add_node("ptest.turns", "slow", {"blocks": 3, "block": 0.1, "prepare": 1.0})
    result = _run(preg, g, tmp_path, "r", jobs=2, use_cache=False, interleave=True)
    assert result.status == "ok", result.errors
    quick, slow = result.outputs["quick"]["out"].value, result.outputs["slow"]["out"].value
    ready = max(quick["prepared"][1], slow["prepared"][1])
    first_turn = min(s for s, _ in quick["spans"] + slow["spans"])
    assert first_turn >= ready, "a turn was timed while another runtime still prepared"
    assert _overlap(quick["prepared"], slow["prepared"])  # side by side, not one in the other's turn
