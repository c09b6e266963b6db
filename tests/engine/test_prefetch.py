"""A cached re-run's files copied while the command starts: used only when they are exactly the
cache entry's, unwritten since; never left behind by a run that did not start."""

import json
import subprocess
import sys
from pathlib import Path

import heiti.engine.cache as cache_module
from heiti.engine.executor import Executor
from heiti.engine.graph import loads_graph
from heiti.engine.prefetch import Prefetch, start
from heiti.engine.run_hints import note_run

ROOT = Path(__file__).resolve().parents[2]
GRAPH = {"format": "heiti-graph", "version": 1, "name": "prefetch", "edges": [],
         "nodes": [{"id": "digits", "kind": "dataset.digits", "params": {}}]}


def filled(tmp_path):
    cache = tmp_path / "cache"
    graph = loads_graph(json.dumps(GRAPH))
    first = Executor(cache_dir=cache).run(graph, tmp_path / "first")
    assert first.status == "ok" and first.keys
    return cache, graph, first


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prefetched_copies_are_used_and_equal_the_entry(tmp_path, monkeypatch):
    cache, graph, first = filled(tmp_path)
    copied = []
    monkeypatch.setattr(cache_module, "copy_tree", lambda *a: copied.append(a) or [])
    prefetch = Prefetch(cache, tmp_path / "again", first.keys)
    again = Executor(cache_dir=cache, prefetch=prefetch).run(graph, tmp_path / "again")
    assert again.states["digits"] == "cached"
    assert copied == []  # the restore kept the thread's copies
    workdir = tmp_path / "again" / "nodes" / "digits"
    assert files_of(workdir) == files_of(tmp_path / "first" / "nodes" / "digits") != {}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in workdir.rglob("*") if p.is_file())


def test_a_copy_written_after_the_prefetch_is_copied_again(tmp_path):
    cache, graph, first = filled(tmp_path)
    prefetch = Prefetch(cache, tmp_path / "again", first.keys)
    assert prefetch.take("digits", first.keys["digits"])
    workdir = tmp_path / "again" / "nodes" / "digits"
    victim = next(p for p in sorted(workdir.rglob("*")) if p.is_file())
    size = victim.stat().st_size
    victim.write_bytes(b"\0" * size)  # same size, other bytes
    (workdir / "planted.txt").write_text("not from the cache")
    again = Executor(cache_dir=cache, prefetch=prefetch).run(graph, tmp_path / "again")
    assert again.states["digits"] == "cached"
    assert files_of(workdir) == files_of(tmp_path / "first" / "nodes" / "digits")


def test_copies_of_another_key_are_not_used(tmp_path):
    cache, graph, first = filled(tmp_path)
    prefetch = Prefetch(cache, tmp_path / "again", first.keys)
    assert prefetch.take("digits", "0" * 64) is None
    assert prefetch.take("elsewhere", first.keys["digits"]) is None


def test_only_into_a_folder_of_its_own(tmp_path):
    cache, _graph, first = filled(tmp_path)
    graph_file = tmp_path / "g.json"
    graph_file.write_text(json.dumps(GRAPH))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("the user's")
    assert start(cache, graph_file, str(taken), first.keys) is None
    assert (taken / "mine.txt").read_text() == "the user's"
    assert start(cache, graph_file, str(tmp_path / "fresh"), {}) is None  # nothing to copy


def test_a_run_that_does_not_start_leaves_no_folder(tmp_path):
    graph_file, cache, out = tmp_path / "g.json", tmp_path / "cache", tmp_path / "out"
    bad = dict(GRAPH, nodes=[{"id": "x", "kind": "no.such.kind", "params": {}}])
    graph_file.write_text(json.dumps(bad))
    cache.mkdir()
    note_run(cache, graph_file, True, [], {"x": "ab" * 32})  # a hint that the graph no longer earns
    done = subprocess.run([sys.executable, "-m", "heiti.engine.cli", "run", str(graph_file), "--cache", str(cache),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "no.such.kind" in done.stderr + done.stdout
    assert not out.exists()
