"""A graph structure that passed validation is remembered beside the cache, and only that."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.executor import Executor, InvalidGraph
from heiti.engine.graph import Graph
from heiti.engine.validate import validate
from heiti.engine.verdicts import Verdicts, code_identity
from heiti.nodes.datasets import NpzDataset

ROOT = Path(__file__).resolve().parents[2]


def chain() -> Graph:
    g = Graph(name="chain")
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.source", "b", {"value": 3})
    g.add_node("test.add", "sum", {})
    g.connect(("b", "out"), ("sum", "values"))
    g.connect(("a", "out"), ("sum", "values"))
    return g


def test_a_passing_structure_is_taken_from_the_verdict_the_second_time(registry, tmp_path):
    verdicts = Verdicts(tmp_path / "verdicts.json")
    first = validate(chain(), registry, verdicts=verdicts)
    assert first.ok and first.known_order is None  # judged in full, then remembered
    second = validate(chain(), registry, verdicts=Verdicts(tmp_path / "verdicts.json"))
    assert second.ok and second.known_order == first.order()
    assert second.classes.keys() == first.classes.keys() and second.params["a"].value == 2
    assert second.downstream("a") == {"sum"}  # the graph is still there when asked for


def test_a_changed_graph_is_judged_again(registry, tmp_path):
    validate(chain(), registry, verdicts=Verdicts(tmp_path / "verdicts.json"))
    changed = chain()
    changed.add_node("test.source", "c", {})
    changed.connect(("c", "out"), ("sum", "nope"))  # a port test.add does not have
    result = validate(changed, registry, verdicts=Verdicts(tmp_path / "verdicts.json"))
    assert not result.ok and [p.code for p in result.problems] == ["unknown_port"]


def test_only_passing_verdicts_are_kept(registry, tmp_path):
    bad = chain()
    bad.add_node("test.source", "c", {})
    bad.connect(("c", "out"), ("sum", "nope"))
    assert not validate(bad, registry, verdicts=Verdicts(tmp_path / "verdicts.json")).ok
    assert not (tmp_path / "verdicts.json").exists()


def test_changed_kind_code_is_another_key(registry):
    before = code_identity(registry)
    module = sys.modules[registry.get("test.add").__module__].__file__
    info = os.stat(module)
    try:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        assert code_identity(registry) != before
    finally:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert code_identity(registry) == before


def test_a_run_still_checks_the_files_a_remembered_graph_names(registry, tmp_path):
    registry.register(NpzDataset)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
    g = Graph(name="npz")
    g.add_node("dataset.npz", "data", {"path": str(tmp_path / "d.npz")})
    assert Executor(registry, cache_dir=tmp_path / "cache").run(g, tmp_path / "r1").status == "ok"
    assert json.loads((tmp_path / "cache" / "verdicts.json").read_text())  # remembered
    (tmp_path / "d.npz").unlink()
    with pytest.raises(InvalidGraph) as err:
        Executor(registry, cache_dir=tmp_path / "cache").run(g, tmp_path / "r2")
    assert [p.code for p in err.value.result.problems] == ["path"]


def test_a_cached_rerun_does_not_import_networkx(tmp_path):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "lean", "edges": [], "nodes": [
        {"id": "digits", "kind": "dataset.digits", "params": {}}]}))
    code = ("import json, sys\nfrom heiti.engine.cli import main\n"
            f"code = main(['run', {str(graph)!r}, '--jobs', '1', '--cache', {str(tmp_path / 'cache')!r}, "
            "'--out', sys.argv[1]])\n"
            "print(json.dumps([code, 'networkx' in sys.modules]))")

    def run(out):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / out)], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert run("r1") == [0, True]  # judged in full (networkx), verdict kept
    assert run("r2") == [0, False]
