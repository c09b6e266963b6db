"""Tuning never makes a model slower: compile.tvm times the tuned build against the default-scheduled
one as whole models and keeps the faster (heiti.nodes.tvm_duel), with real TVM builds."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.test_tvm_schedule import assert_agrees, compile_node, make_onnx, ort_reference, run_tvm


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return make_onnx(tmp_path_factory.mktemp("duel") / "tiny.onnx")


def _builds(onnx_model):
    """The tiny CNN built twice: TVM's unscheduled loops and Heiti's default schedule."""
    import onnx
    import tvm
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("llvm")
    mod = from_onnx(onnx.load(str(onnx_model)), shape_dict={"x": [1, 3, 32, 32]})
    naive = tvm.compile(mod, target=target)
    prepared = ts.prepare(mod, target, "NHWC")
    database, _ = ts.default_schedule_database(prepared, target)
    scheduled = tvm.compile(ts.apply_database(prepared, target, database), target=target)
    return naive, scheduled


def test_the_duel_keeps_the_faster_build(onnx_model):
    from heiti.nodes import tvm_duel

    naive, scheduled = _builds(onnx_model)
    inputs = tvm_duel.sample_inputs([{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32"}])
    lost = tvm_duel.duel(tuned=naive, default=scheduled, inputs=inputs)
    assert not lost.keep_tuned and lost.as_dict()["kept"] == "default"
    won = tvm_duel.duel(tuned=scheduled, default=naive, inputs=inputs)
    assert won.keep_tuned and won.tuned_ms < won.default_ms


def test_a_tuned_build_slower_than_the_default_is_not_kept(onnx_model, tmp_path, monkeypatch):
    """Records that make every task naive stand in for a tuner that picked badly under load: the
    tuning itself is tested in test_tvm_schedule.py; here only what compile.tvm keeps."""
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.tvm_tuning import TuneResult
    from tvm.s_tir import meta_schedule as ms

    monkeypatch.setattr(ts, "tune", lambda *a, **k: TuneResult(trials=1, seconds=0.1, cost_model="xgb"))
    monkeypatch.setattr(ts, "tuned_database", lambda folder, heuristic: ms.database.MemoryDatabase())
    model, _ = compile_node(onnx_model, tmp_path / "c", tune_trials=1, tuning_db=str(tmp_path / "db"))
    tuning = model.meta["tvm_schedule"]["tuning"]
    assert tuning["duel"]["kept"] == "default" and tuning["kept_default"] is True
    assert tuning["duel"]["tuned_ms"] > tuning["duel"]["default_ms"] > 0
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert_agrees(onnx_model, x, run_tvm(model.path, x), ort_reference(onnx_model, x))
