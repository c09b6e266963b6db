"""The heuristic schedules that seed MetaSchedule's search must survive its mutations (issue 10).

The evolutionary search mutates every trace of its population and replays it the way
ThreadedTraceApply does: the trace without its postproc part (everything after EnterPostproc),
then enter_postproc and the postprocessors again on the new loop nest. Seeds once lacked the
marker, so a mutated compute location replayed the recorded postproc `get_loops` against a loop
nest of a different depth and TVM aborted the whole tuning run. Mutations use fixed random states,
so these tests are deterministic; real TVM, the small CNN of test_tvm_schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.nodes.test_tvm_schedule import make_onnx


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """(task module, seed schedule, postprocs, tune context) for every task of the small CNN."""
    import onnx
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms

    path = make_onnx(tmp_path_factory.mktemp("seeds") / "tiny.onnx")
    target, _ = resolve_target("host")
    mod = ts.prepare(from_onnx(onnx.load(str(path)), shape_dict={"x": [1, 3, 32, 32]}), target)
    ts.light_tensor_intrin(target)
    heuristic = ts.heuristic_for(target)
    out = []
    for task in ms.relax_integration.extract_tasks(mod, target):
        task_mod = task.dispatched[0]
        sch = ts.schedule_task(task_mod, target, heuristic)
        if sch is not None:
            context = ms.TuneContext(mod=task_mod, target=target, space_generator="post-order-apply",
                                     task_name=task.task_name, rand_state=1)
            out.append((task.task_name, task_mod, sch, context))
    return target, out


def replay_like_the_search(task_mod, trace, postprocs) -> bool:
    import tvm

    sch = tvm.s_tir.Schedule(task_mod)
    trace.apply_to_schedule(sch, remove_postproc=True)  # raises on a trace that does not replay
    sch.enter_postproc()
    return all(p.apply(sch) for p in postprocs)


def test_mutated_seed_traces_replay_like_the_search_does(seeds):
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule import _ffi_api

    _, tasks = seeds
    mutated = {}
    for name, task_mod, sch, context in tasks:
        assert "EnterPostproc" in [inst.kind.name for inst in sch.trace.insts], name
        postprocs = context.space_generator.postprocs
        for mutator in ms.Mutator.create("llvm"):
            mutator._initialize_with_tune_context(context)
            kind = type(mutator).__name__
            for rand_state in range(1, 9):  # 0 is a fixed point of TVM's linear congruential generator
                new = _ffi_api.MutatorApply(mutator, sch.trace, rand_state)
                if new is None:
                    continue
                mutated[kind] = mutated.get(kind, 0) + 1
                try:
                    assert replay_like_the_search(task_mod, new, postprocs), f"{name}: {kind} rejected by a postproc"
                except Exception as err:  # noqa: BLE001 - the TVM check failure is what this test is about
                    pytest.fail(f"{name}: {kind} (rand state {rand_state}) does not replay: {str(err)[-300:]}")
    # the convolutions and the mean have producers with a sampled compute location: the mutation
    # that once broke tuning must have been exercised, with the tile and unroll mutations
    assert {"MutateComputeLocation", "MutateTileSize", "MutateUnroll"} <= set(mutated), mutated


def test_unmarked_seed_records_are_dropped_from_an_old_database(seeds, tmp_path):
    import tvm
    from heiti.nodes import tvm_schedule as ts
    from tvm.s_tir import meta_schedule as ms

    target, tasks = seeds
    name, task_mod, sch, _ = next(t for t in tasks if "conv2d" in t[0])
    old = tvm.s_tir.Trace([i for i in sch.trace.insts if i.kind.name != "EnterPostproc"], dict(sch.trace.decisions))
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    workload = database.commit_workload(task_mod)
    args = ms.arg_info.ArgInfo.from_prim_func(task_mod["main"])
    database.commit_tuning_record(ms.database.TuningRecord(old, workload, [1e-4], target, args))  # as Heiti wrote seeds
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [2e-4], target, args))
    records = tmp_path / ts.RECORDS_FILE
    assert len(records.read_text().splitlines()) == 2
    records.write_text(records.read_text() + "not json\n")  # a line it cannot read is left for TVM

    assert ts.drop_unreplayable_records(tmp_path) == 1
    lines = records.read_text().splitlines()
    assert len(lines) == 2 and lines[1] == "not json"
    assert any(inst[0] == "EnterPostproc" for inst in json.loads(lines[0])[1][0][0])
    assert ts.drop_unreplayable_records(tmp_path) == 0  # idempotent
    records.write_text(lines[0] + "\n")
    top = ms.database.JSONDatabase(work_dir=str(tmp_path)).get_top_k(workload, 5)  # TVM still reads the file
    assert len(top) == 1 and "EnterPostproc" in [inst.kind.name for inst in top[0].trace.insts], name
    assert ts.drop_unreplayable_records(Path(tmp_path / "missing")) == 0


def test_a_tuning_failure_inside_tvm_still_builds_the_default_schedules(tmp_path, monkeypatch):
    """The safety net stays: if TVM aborts the search anyway, compile.tvm warns and builds untuned."""
    import numpy as np
    import tvm
    from heiti.engine import ModelArtifact
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import TVMCompile

    from tests.nodes.test_tvm_schedule import Ctx, assert_agrees, ort_reference, run_tvm

    def abort(*args, **kwargs):
        raise tvm.error.InternalError("Check failed: old_outputs.size() == new_outputs.size() (4 vs. 6)")

    monkeypatch.setattr(ts, "tune", abort)
    warnings: list[str] = []
    ctx = Ctx(tmp_path)
    ctx.warn = warnings.append
    onnx_model = make_onnx(tmp_path / "tiny.onnx")
    artifact = ModelArtifact(path=onnx_model, model_format="onnx",
                             inputs=[{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32"}],
                             outputs=[{"name": "y", "shape": [1, 10], "dtype": "float32"}])
    model = TVMCompile({"tune_trials": 8, "tuning_db": str(tmp_path / "db")}).run(ctx, model=artifact)["model"]
    schedule = model.meta["tvm_schedule"]
    assert "old_outputs" in schedule["tuning_failed"] and "tuning" not in schedule
    assert model.meta["tuned"] is False and model.meta["tuned_trials"] == 0
    assert len(warnings) == 1 and "default schedules" in warnings[0]
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32), dtype=np.float32)
    ref = ort_reference(onnx_model, x)
    assert_agrees(onnx_model, x, run_tvm(model.path, x), ref)


def test_metaschedule_loggers_configure_again_beside_foreign_handlers(tmp_path):
    """A second tuning run in one process (pytest 9 hangs unnamed handlers on TVM's logger) must work."""
    import logging

    from heiti.nodes.tvm_schedule import TVM_LOGGER, foreign_log_handlers_detached
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    logger = logging.getLogger(TVM_LOGGER)
    foreign = logging.NullHandler()  # unnamed, like pytest's LogCaptureHandler
    saved = list(logger.handlers)
    try:
        for run in ("first", "second"):
            logger.addHandler(foreign)
            with foreign_log_handlers_detached():
                loggers = get_loggers_from_work_dir(str(tmp_path / run), ["conv2d", "dense"])
            assert len(loggers) == 2 and (tmp_path / run / "logs").is_dir()
            assert foreign in logger.handlers  # given back to whoever attached it
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved:
            logger.addHandler(handler)
