"""Heiti's collector policy: the `heiti` command collects rarely while starting and not at exit,
workers start with few collections and imports kept out of them, and `main()` called from other
code leaves the collector alone."""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys

import pytest


@pytest.fixture
def collector():
    module = importlib.reload(importlib.import_module("heiti.engine.collector"))
    before = gc.get_threshold()
    yield module
    gc.unfreeze()
    gc.set_threshold(*before)
    importlib.reload(module)


def test_start_up_collects_rarely_then_freezes_what_it_made_and_restores_the_thresholds(collector):
    usual = gc.get_threshold()
    collector.begin()
    assert gc.get_threshold() == (collector.STARTUP_THRESHOLD, *usual[1:])
    made = [[i] for i in range(1000)]  # long-lived start-up objects
    collector.started()
    assert gc.get_threshold() == usual
    assert gc.get_freeze_count() >= len(made)


def test_the_end_of_the_command_skips_the_last_collection(collector):
    collector.begin()
    collector.ending()
    assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 10


def test_main_called_by_other_code_leaves_the_collector_alone(collector, tmp_path):
    from heiti.engine.cli import main

    usual = gc.get_threshold()
    graph = tmp_path / "g.json"
    graph.write_text('{"format": "heiti-graph", "version": 1, "name": "empty", "nodes": [], "edges": []}')
    main(["validate", str(graph)])
    assert gc.get_threshold() == usual and gc.get_freeze_count() == 0


def test_the_fork_server_hands_workers_their_thresholds_and_its_imports_frozen():
    code = ("import gc, json\nimport heiti.engine.worker_preload\n"
            "print(json.dumps([list(gc.get_threshold()), gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    thresholds, frozen = json.loads(out.stdout.strip().splitlines()[-1])
    from heiti.engine.collector import WORKER_THRESHOLDS

    assert tuple(thresholds) == WORKER_THRESHOLDS
    assert frozen > 10_000  # the engine and every node kind's module
