"""Nodes as Ray tasks on a local cluster: results, events, failures, board resources."""

import os

import pytest
from heiti.engine.events import read_events
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph

from tests import parallelnodes

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'heiti[cluster]')")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, resources={"board-a": 1}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.heavy  # starting a local Ray takes 10-30 s on 2 cores
def test_a_graph_runs_as_ray_tasks(registry, tmp_path, cluster):
    for cls in parallelnodes.ALL:
        registry.register(cls)
    g = Graph(name="ray")
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.source", "b", {"value": 3})
    g.add_node("test.add", "sum")
    g.connect(("a", "out"), ("sum", "values"))
    g.connect(("b", "out"), ("sum", "values"))
    g.add_node("ptest.board", "on_board", {"ray_resources": {"board-a": 1}})
    g.add_node("test.fail", "broken")
    ex = Executor(registry, cache_dir=tmp_path / "cache", jobs=2, ray_address="")
    result = ex.run(g, tmp_path / "r")
    assert result.states == {"a": "done", "b": "done", "sum": "done", "on_board": "done", "broken": "failed"}
    assert result.outputs["sum"]["out"].value == 5
    assert result.outputs["on_board"]["out"].value[2] != os.getpid()  # ran in a Ray worker
    assert (tmp_path / "r" / "nodes" / "a" / "value.json").read_text() == "2.0"  # files via the shared folder
    kinds = {(e.type, getattr(e, "node", "")) for e in read_events(tmp_path / "r" / "events.jsonl")}
    assert ("node_metric", "a") in kinds and ("node_progress", "a") in kinds  # relayed from the task
    assert "always fails" in result.errors["broken"]


def test_an_unreachable_cluster_is_a_clear_error_not_a_hang(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    graph = tmp_path / "g.json"
    Graph(name="g", nodes=[{"id": "a", "kind": "test.source"}]).save(graph)
    env = dict(os.environ, HEITI_PLUGINS="tests.testnodes", PYTHONPATH=str(root), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "heiti.engine.cli", "run", str(graph), "--out", str(tmp_path / "r"),
                           "--ray", "127.0.0.1:1"], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
