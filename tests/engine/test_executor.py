"""Executor: order, events, cache, failure isolation, cancellation, run folder."""

import json
import threading

import pytest
from heiti.engine.events import read_events
from heiti.engine.executor import Executor, InvalidGraph
from heiti.engine.graph import Graph, load_graph


def chain_graph() -> Graph:
    g = Graph(name="chain")
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.source", "b", {"value": 3})
    g.add_node("test.add", "c", {"offset": 1})
    g.add_node("test.add", "d")
    g.connect(("a", "out"), ("c", "values"))
    g.connect(("b", "out"), ("c", "values"))
    g.connect(("c", "out"), ("d", "values"))
    return g


def run(registry, graph, tmp_path, name, **kw):
    events = []
    ex = Executor(registry, cache_dir=tmp_path / "cache", **kw)
    ex.subscribe(events.append)
    return ex.run(graph, tmp_path / name), events


def test_runs_in_order_and_writes_run_folder(registry, tmp_path):
    result, events = run(registry, chain_graph(), tmp_path, "r1")
    assert result.status == "ok" and result.exit_code == 0
    assert result.outputs["d"]["out"].value == 6
    started = [e.node for e in events if e.type == "node_started"]
    assert started.index("c") > started.index("a") and started.index("d") > started.index("c")
    out = tmp_path / "r1"
    as_run = chain_graph()
    for spec in as_run.nodes:
        spec.version = 1  # graph.json records each kind's version
    assert load_graph(out / "graph.json").to_dict() == as_run.to_dict()
    kinds = [e.type for e in read_events(out / "events.jsonl")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "node_metric" in kinds and "node_progress" in kinds
    assert json.loads((out / "nodes" / "a" / "value.json").read_text()) == 2


def test_rerun_uses_cache_and_change_reruns_descendants_only(registry, tmp_path):
    g = chain_graph()
    run(registry, g, tmp_path, "r1")
    result, events = run(registry, g, tmp_path, "r2")
    assert set(result.states.values()) == {"cached"}
    assert (tmp_path / "r2" / "nodes" / "a" / "value.json").exists()  # files restored into the new run
    g.set_param("b", "value", 10)
    result, _ = run(registry, g, tmp_path, "r3")
    assert result.states == {"a": "cached", "b": "done", "c": "done", "d": "done"}
    assert result.outputs["d"]["out"].value == 13


def test_no_cache_executes_everything(registry, tmp_path):
    g = chain_graph()
    run(registry, g, tmp_path, "r1")
    result, _ = run(registry, g, tmp_path, "r2", use_cache=False)
    assert set(result.states.values()) == {"done"}


def test_cached_paths_point_into_the_new_run(registry, tmp_path):
    g = Graph()
    g.add_node("test.model", "m", {"fmt": "keras"})
    g.add_node("test.pass", "p")
    g.connect(("m", "model"), ("p", "model"))
    run(registry, g, tmp_path, "r1")
    result, _ = run(registry, g, tmp_path, "r2")
    assert result.states["p"] == "cached"
    path = result.outputs["p"]["model"].path
    assert str(path).startswith(str((tmp_path / "r2").resolve())) and path.read_bytes() == b"model"


def test_failure_skips_descendants_but_independent_branch_finishes(registry, tmp_path):
    g = chain_graph()
    g.add_node("test.fail", "f")
    g.add_node("test.add", "after")
    g.connect(("f", "out"), ("after", "values"))
    result, events = run(registry, g, tmp_path, "r1")
    assert result.status == "failed" and result.exit_code == 2
    assert result.states["f"] == "failed" and result.states["after"] == "skipped"
    assert result.states["d"] == "done"
    failed = next(e for e in events if e.type == "node_failed")
    assert failed.message == "this node always fails" and failed.traceback == ""


def test_unexpected_exception_keeps_traceback(registry, tmp_path):
    from tests.testnodes import Source

    class Broken(Source):
        kind = "test.broken"

        def run(self, ctx, **inputs):
            return {"out": 1 / 0}

    registry.register(Broken)
    g = Graph()
    g.add_node("test.broken", "x")
    result, events = run(registry, g, tmp_path, "r1")
    failed = next(e for e in events if e.type == "node_failed")
    assert failed.error_type == "ZeroDivisionError" and "Traceback" in failed.traceback


def test_invalid_graph_is_refused_before_running(registry, tmp_path):
    g = Graph()
    g.add_node("test.add", "lonely")
    with pytest.raises(InvalidGraph) as err:
        Executor(registry, cache_dir=tmp_path / "c").run(g, tmp_path / "r")
    assert err.value.result.problems[0].code == "missing_input"
    assert not (tmp_path / "r").exists()


def test_cancel_stops_long_node_and_skips_the_rest(registry, tmp_path):
    g = Graph()
    g.add_node("test.slow", "slow", {"steps": 10_000, "step_s": 0.01})
    g.add_node("test.add", "after")
    g.connect(("slow", "out"), ("after", "values"))
    ex = Executor(registry, cache_dir=tmp_path / "c")
    started = threading.Event()
    ex.subscribe(lambda e: started.set() if e.type == "node_progress" else None)
    threading.Thread(target=lambda: (started.wait(10), ex.cancel()), daemon=True).start()
    result = ex.run(g, tmp_path / "r")
    assert result.status == "cancelled" and result.exit_code == 130
    assert result.states == {"slow": "cancelled", "after": "cancelled"}
    events = read_events(tmp_path / "r" / "events.jsonl")
    assert events[-1].type == "run_finished" and events[-1].status == "cancelled"


def test_path_params_enter_the_cache_key(registry, tmp_path):
    from heiti.engine import Node, Out
    from heiti.engine.payloads import Value
    from pydantic import BaseModel

    class ReadFile(Node):
        kind = "test.read_file"
        path_params = ("path",)

        class Params(BaseModel):
            path: str

        outputs = {"out": Out(Value)}

        def run(self, ctx):
            return {"out": Value(value=open(self.params.path).read())}

    registry.register(ReadFile)
    data = tmp_path / "data.txt"
    data.write_text("one")
    g = Graph()
    g.add_node("test.read_file", "r", {"path": str(data)})
    assert run(registry, g, tmp_path, "r1")[0].outputs["r"]["out"].value == "one"
    assert run(registry, g, tmp_path, "r2")[0].states["r"] == "cached"
    data.write_text("two")
    result, _ = run(registry, g, tmp_path, "r3")
    assert result.states["r"] == "done" and result.outputs["r"]["out"].value == "two"


def test_cache_is_shared_between_graphs_that_name_nodes_differently(registry, tmp_path):
    first = Graph()
    first.add_node("test.model", "m", {"fmt": "keras"})
    first.add_node("test.pass", "p")
    first.connect(("m", "model"), ("p", "model"))
    run(registry, first, tmp_path, "r1")
    second = Graph()
    second.add_node("test.model", "my_model", {"fmt": "keras"})
    second.add_node("test.pass", "relay")
    second.add_node("test.keras_to_onnx", "onnx")
    second.connect(("my_model", "model"), ("relay", "model"))
    second.connect(("relay", "model"), ("onnx", "model"))
    result, _ = run(registry, second, tmp_path, "r2")
    assert result.states == {"my_model": "cached", "relay": "cached", "onnx": "done"}
    path = result.outputs["relay"]["model"].path
    assert path == (tmp_path / "r2" / "nodes" / "my_model" / "model.keras").resolve()
    assert result.outputs["onnx"]["model"].path.read_bytes() == b"model>onnx"


def test_partial_input_runs_with_the_values_that_arrived(registry, tmp_path):
    g = Graph()
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.fail", "f")
    g.add_node("test.collect", "sum")
    g.add_node("test.add", "strict")
    for src in ("a", "f"):
        g.connect((src, "out"), ("sum", "values"))
        g.connect((src, "out"), ("strict", "values"))
    result, _ = run(registry, g, tmp_path, "r1")
    assert result.states["sum"] == "done" and result.outputs["sum"]["out"].value == 2
    assert result.states["strict"] == "skipped"
    assert result.status == "failed"

    only_failures = Graph()
    only_failures.add_node("test.fail", "f")
    only_failures.add_node("test.collect", "sum")
    only_failures.connect(("f", "out"), ("sum", "values"))
    assert run(registry, only_failures, tmp_path, "r2")[0].states["sum"] == "skipped"
