"""Cache entries are immutable: run folders hold copies, entries are checked against a manifest."""

import json
import stat

from heiti.engine.events import read_events
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph


def source_graph(value: float) -> Graph:
    g = Graph(name="one")
    g.add_node("test.source", "a", {"value": value})
    return g


def run(registry, graph, tmp_path, name):
    return Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / name)


def cache_files(tmp_path):
    return [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_rerun_into_the_same_folder_leaves_the_earlier_entry_intact(registry, tmp_path):
    run(registry, source_graph(2), tmp_path, "x")
    run(registry, source_graph(5), tmp_path, "x")  # writes value.json again in x/nodes/a
    result = run(registry, source_graph(2), tmp_path, "y")
    assert result.states["a"] == "cached"
    assert json.loads((tmp_path / "y" / "nodes" / "a" / "value.json").read_text()) == 2


def test_entries_are_read_only_and_run_folders_are_not_links_to_them(registry, tmp_path):
    run(registry, source_graph(2), tmp_path, "x")
    run(registry, source_graph(2), tmp_path, "y")
    stored = [p for p in cache_files(tmp_path) if p.name == "value.json"]
    assert stored and all(not p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for p in stored)
    restored = tmp_path / "y" / "nodes" / "a" / "value.json"
    assert restored.stat().st_nlink == 1 and restored.stat().st_ino != stored[0].stat().st_ino
    restored.write_text("99")  # a run folder is the user's to change
    assert json.loads(stored[0].read_text()) == 2


def test_a_corrupt_entry_is_dropped_and_its_node_runs_again(registry, tmp_path):
    run(registry, source_graph(2), tmp_path, "x")
    stored = next(p for p in cache_files(tmp_path) if p.name == "value.json")
    stored.chmod(0o644)
    stored.write_text("7")  # same size, other bytes
    result = run(registry, source_graph(2), tmp_path, "y")
    assert result.states["a"] == "done"
    assert json.loads((tmp_path / "y" / "nodes" / "a" / "value.json").read_text()) == 2
    warnings = [e.message for e in read_events(tmp_path / "y" / "events.jsonl")
                if e.type == "node_log" and e.level == "warning"]
    assert any("corrupt" in m and "value.json" in m for m in warnings)
    again = run(registry, source_graph(2), tmp_path, "z")  # the fresh entry is whole again
    assert again.states["a"] == "cached"


def test_a_missing_file_in_an_entry_counts_as_corrupt(registry, tmp_path):
    run(registry, source_graph(3), tmp_path, "x")
    next(p for p in cache_files(tmp_path) if p.name == "value.json").unlink()
    result = run(registry, source_graph(3), tmp_path, "y")
    assert result.states["a"] == "done"
    assert (tmp_path / "y" / "nodes" / "a" / "value.json").exists()
