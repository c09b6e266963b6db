"""MetaSchedule tuning for compile.tvm: measured records per task, seeded by the default schedule.

Tuning (`tune`) starts from the default schedules of heiti.nodes.tvm_schedule: they are measured and
committed to the database first, so the evolutionary search mutates good programs and a tuned model
is never slower than untuned. The database is one JSONDatabase per target, keyed by each task's
structural hash, so recompiling a tuned model reuses its records and models that share tasks (same
conv shapes) share them. Split out of tvm_schedule (one concern per module); tvm_schedule still
re-exports these names.

Docs: docs/tvm.md. Heavy imports stay inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heiti.nodes.tvm_schedule import heuristic_for, light_tensor_intrin, schedule_task


# --- tuning ------------------------------------------------------------------------------------------
def target_key(target: Any) -> str:
    """Short stable key of a target (the database folder name): records are only valid for it."""
    text = str(target.export()) if hasattr(target, "export") else str(target)
    attrs = target.attrs if hasattr(target, "attrs") else {}
    label = "-".join(str(attrs.get(k, "")) for k in ("mcpu", "num-cores") if attrs.get(k, ""))
    return f"{label or 'llvm'}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def default_tuning_dir(target: Any) -> Path:
    base = Path(os.environ.get("HEITI_TVM_TUNING", Path.home() / ".cache" / "heiti" / "tvm-tuning"))
    return base / target_key(target)


@dataclass
class TuneResult:
    trials: int = 0
    seconds: float = 0.0
    tasks: int = 0
    reused: bool = False
    cost_model: str = ""
    best_ms: float | None = None  # sum over tasks of weight x best measured time
    default_ms: float | None = None  # the same sum for the default (heuristic) schedules
    history: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best_ms)
    errors: list[str] = field(default_factory=list)  # default schedules that failed to build or run
    dropped_records: int = 0  # unmarked seed records removed before tuning (drop_unreplayable_records)


def cost_model_name() -> str:
    return "xgb" if importlib.util.find_spec("xgboost") else "random"


def in_process_builder() -> Any:
    """A MetaSchedule builder compiling candidates in this process.

    LocalBuilder starts a fresh worker pool for every batch and each worker imports TVM's tensor
    intrinsics (30 s or more on a busy 2-core machine), which dwarfs building a batch. The price:
    no per-candidate timeout and no crash isolation.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    results.append(BuilderResult(default_export(default_build(item.mod, item.target, item.params)), None))
                except Exception as err:  # noqa: BLE001 - a failed candidate is a result, not a crash
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


def _mean_seconds(runner_result: Any) -> float | None:
    secs = getattr(runner_result, "run_secs", None)
    if runner_result is None or getattr(runner_result, "error_msg", None) or not secs:
        return None
    return sum(float(s) for s in secs) / len(secs)


TVM_LOGGER = "tvm.s_tir.meta_schedule"


@contextlib.contextmanager
def foreign_log_handlers_detached() -> Any:
    """Let MetaSchedule (re)configure its loggers, then give back the handlers others attached.

    Its create_loggers lists the handlers already on its logger by name in a dictConfig: any handler
    it did not make itself breaks it ("'NoneType' object has no attribute 'format'" for an unnamed
    one). pytest 9 attaches its unnamed capture handlers to every non-propagating logger, so the
    second tuning run in a process failed there.
    """
    import logging

    logger = logging.getLogger(TVM_LOGGER)
    foreign = [h for h in logger.handlers if not (h.get_name() or "").startswith(TVM_LOGGER + ".")]
    for handler in foreign:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in foreign:
            logger.addHandler(handler)


RECORDS_FILE = "database_tuning_record.json"  # JSONDatabase's records: one JSON array per line


def drop_unreplayable_records(folder: Path) -> int:
    """Remove records whose trace has no EnterPostproc marker; returns how many.

    MetaSchedule's own records always carry the marker. Seeds written by Heiti before the fix did
    not: the evolutionary search mutates them, replays them with their postproc steps and TVM
    aborts the whole tuning run (issue 10, docs/tvm.md). Their tasks get a fresh, marked seed.
    """
    import json

    path = folder / RECORDS_FILE
    if not path.is_file():
        return 0
    keep: list[str] = []
    dropped = 0
    for line in path.read_text().splitlines():
        try:
            insts = json.loads(line)[1][0][0]
            marked = any(inst[0] == "EnterPostproc" for inst in insts)
        except (ValueError, IndexError, TypeError, KeyError):
            marked = True  # not a record this knows how to read: left to TVM
        if marked:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
    return dropped


def tune(mod: Any, target: Any, folder: Path, *, trials: int = 0, minutes: float = 0.0, retune: bool = False,
         builder: str = "in_process", on_progress: Callable[[float, float, str], None] | None = None,
         cancelled: Callable[[], bool] | None = None) -> TuneResult:
    """MetaSchedule tuning of `mod` (from `prepare`) into the JSONDatabase in `folder`.

    Stops at `trials` measured candidates or after `minutes` (whichever comes first; 0 = no limit
    of that kind). The heuristic schedules are measured first and seed the evolutionary search.
    on_progress(elapsed_s, best_ms, message) is called after every measured batch.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    t0 = time.perf_counter()
    light_tensor_intrin(target)
    folder.mkdir(parents=True, exist_ok=True)
    dropped = drop_unreplayable_records(folder)
    extracted = ms.relax_integration.extract_tasks(mod, target)
    database = ms.database.JSONDatabase(work_dir=str(folder))
    result = TuneResult(tasks=len(extracted), cost_model=cost_model_name(), dropped_records=dropped)
    workloads = [database.commit_workload(t.dispatched[0]) for t in extracted]
    best: list[float | None] = []
    for wl in workloads:
        top = database.get_top_k(wl, 1)
        best.append(_mean_seconds_record(top[0]) if top else None)
    if all(b is not None for b in best) and not retune:
        result.reused = True
        result.best_ms = _weighted_ms(extracted, best)
        result.seconds = time.perf_counter() - t0
        return result
    budget_trials = trials if trials > 0 else 1_000_000
    deadline = t0 + minutes * 60 if minutes > 0 else math.inf
    runner = ms.runner.LocalRunner(timeout_sec=60)
    build = in_process_builder() if builder == "in_process" else ms.builder.LocalBuilder(timeout_sec=120)

    # 1. measure the default schedules (seeds; also the "never worse than untuned" floor)
    heuristic = heuristic_for(target)
    seeds = []
    for task, b in zip(extracted, best, strict=True):
        if b is not None:
            seeds.append(None)
            continue
        sch = schedule_task(task.dispatched[0], target, heuristic)
        seeds.append(sch)
    todo = [(i, s) for i, s in enumerate(seeds) if s is not None]
    if todo:
        inputs = [ms.builder.BuilderInput(s.mod, target) for _, s in todo]
        built = build.build(inputs)
        # the arguments as the built kernel takes them: weights in the packed layout (tvm_prepack),
        # as MetaSchedule's own task scheduler passes them (from_prim_func gave the unpacked shapes
        # and every seed with a repacked weight failed to run)
        runs = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_entry_func(
            s.mod, remove_preproc=True)) for (_, s), b in zip(todo, built, strict=True) if b.error_msg is None])
        run_iter = iter(runs)
        for (i, s), b in zip(todo, built, strict=True):
            if b.error_msg is not None:
                continue
            measured = next(run_iter).result()
            secs = measured.run_secs
            if measured.error_msg or not secs:
                result.errors.append(str(measured.error_msg)[:500])
                continue
            database.commit_tuning_record(ms.database.TuningRecord(
                s.trace, workloads[i], secs, target, ms.arg_info.ArgInfo.from_entry_func(s.mod, remove_preproc=True)))
            best[i] = sum(float(x) for x in secs) / len(secs)
    result.default_ms = _weighted_ms(extracted, best)
    result.best_ms = result.default_ms
    if on_progress is not None and result.best_ms is not None:
        on_progress(time.perf_counter() - t0, result.best_ms, "default schedules measured")

    # 2. evolutionary search with the cost model, stopped by the trial count or the deadline
    names = [t.task_name for t in extracted]
    order: list[int] = []  # tuning-context index -> index in `extracted`

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
                  runner_results: Any) -> None:
            result.trials += len(runner_results)
            task_id = order[task_id]
            for r in runner_results:
                secs = _mean_seconds(r)
                if secs is not None and (best[task_id] is None or secs < best[task_id]):
                    best[task_id] = secs
            now = time.perf_counter()
            result.best_ms = _weighted_ms(extracted, best)
            result.history.append((round(now - t0, 2), result.best_ms))
            if on_progress is not None and result.best_ms is not None:
                on_progress(now - t0, result.best_ms, f"{result.trials} trials, task {names[task_id]}")
            if now > deadline or (cancelled is not None and cancelled()):
                for i in range(len(task_scheduler.tasks_)):
                    if not task_scheduler.tasks_[i].is_terminated:
                        task_scheduler.terminate_task(i)

    remaining_s = deadline - time.perf_counter()
    if remaining_s > 0 and not (cancelled is not None and cancelled()):
        # the costliest tasks first: a time budget may end before the scheduler's first pass is over
        order.extend(sorted(range(len(extracted)), key=lambda i: -float(extracted[i].weight) * (best[i] or 1.0)))
        with foreign_log_handlers_detached():
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                [extracted[i] for i in order], str(folder), strategy="evolutionary", seed=0)
        per_task = max(8, -(-budget_trials // max(1, len(extracted)))) if trials > 0 else 1_000_000
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=[float(w) for w in weights], work_dir=str(folder),
            max_trials_global=budget_trials, max_trials_per_task=per_task,
            num_trials_per_iter=min(16, per_task), builder=build, runner=runner, database=database,
            cost_model=result.cost_model,
            measure_callbacks=[*ms.MeasureCallback.create("default"), Progress()],
            task_scheduler="round-robin")  # "gradient" visits every task once before it honours terminate_task
    result.seconds = time.perf_counter() - t0
    return result


def _mean_seconds_record(record: Any) -> float | None:
    secs = record.run_secs
    return sum(float(s) for s in secs) / len(secs) if secs else None


def _weighted_ms(extracted: list[Any], best: list[float | None]) -> float | None:
    if any(b is None for b in best):
        known = [(t, b) for t, b in zip(extracted, best, strict=True) if b is not None]
        if not known:
            return None
    else:
        known = list(zip(extracted, best, strict=True))
    return round(sum(float(t.weight) * float(b) for t, b in known) * 1e3, 4)


def tuned_database(folder: Path, heuristic_db: Any) -> Any:
    """Tuned records first, the default schedules for tasks the tuner never reached."""
    from tvm.s_tir import meta_schedule as ms

    return ms.database.OrderedUnionDatabase(ms.database.JSONDatabase(work_dir=str(folder)), heuristic_db)
