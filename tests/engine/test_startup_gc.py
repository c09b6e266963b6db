"""The `heiti` command's collector policy: rare collections while starting, none at exit; `main()`
called from other code leaves the collector alone."""

from __future__ import annotations

import gc
import importlib

import pytest


@pytest.fixture
def startup():
    module = importlib.reload(importlib.import_module("heiti.engine.startup"))
    before = gc.get_threshold()
    yield module
    gc.unfreeze()
    gc.set_threshold(*before)
    importlib.reload(module)


def test_start_up_collects_rarely_then_freezes_what_it_made_and_restores_the_thresholds(startup):
    usual = gc.get_threshold()
    startup.begin()
    assert gc.get_threshold() == (startup.STARTUP_THRESHOLD, *usual[1:])
    made = [[i] for i in range(1000)]  # long-lived start-up objects
    startup.started()
    assert gc.get_threshold() == usual
    assert gc.get_freeze_count() >= len(made)


def test_the_end_of_the_command_skips_the_last_collection(startup):
    startup.begin()
    startup.ending()
    assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 10


def test_main_called_by_other_code_leaves_the_collector_alone(startup, tmp_path, capsys):
    from heiti.engine.cli import main

    usual = gc.get_threshold()
    graph = tmp_path / "g.json"
    graph.write_text('{"format": "heiti-graph", "version": 1, "name": "empty", "nodes": [], "edges": []}')
    main(["validate", str(graph)])
    assert gc.get_threshold() == usual and gc.get_freeze_count() == 0
