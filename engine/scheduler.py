"""The parallel path of the executor: independent nodes at the same time, in worker processes.

Rules: a node starts once all its upstream nodes are over; at most `jobs` run at once; cache hits
are restored here in the parent (no worker needed); a node that declares `exclusive` (the runtimes,
which measure) starts only when nothing else runs, and nothing starts while it runs, so its
timings are not disturbed by a neighbour; with `interleave` the measuring nodes ready together
start together and take turns block by block (engine.turns). A node waits for memory while others run and the
machine is short of it (engine.memory_gate). Ready non-exclusive work goes first, so the measuring
nodes run back to back at the end of each wave. While nodes wait for their inputs, idle workers
make their imports (`Node.warm_up_imports`), so a framework's start overlaps other work. A worker
that dies (segfault, OOM kill) fails its node only; descendants are skipped, other branches
finish. Cancel sets the workers' shared flag, and after a grace period terminates the ones still
running.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.events import NodeLog, NodeSkipped, NodeStarted
from heiti.engine.graph import Graph
from heiti.engine.jobs import class_ref, decode_ports, encode_ports, make_job
from heiti.engine.states import NodeState
from heiti.engine.validate import ValidationResult

if TYPE_CHECKING:
    from heiti.engine.executor import Executor, RunResult
    from heiti.engine.workers import Handle, ProcessLauncher

POLL_S = 0.05
#: seconds a cancelled worker gets to stop by itself before it is terminated
CANCEL_GRACE_S = 5.0


class ClusterUnavailable(Exception):
    """Nodes cannot be sent where they were asked to run (Ray missing, cluster unreachable)."""


def _exclusive(cls: Any, params: Any, under_ray: bool) -> bool:
    """Measuring nodes run alone; on Ray, one pinned to a board is kept apart by the board's resource."""
    if not getattr(cls, "exclusive", False):
        return False
    return not (under_ray and getattr(params, "ray_resources", None))


def make_launcher(executor: Executor) -> Any:
    if executor.ray_address is not None:
        from heiti.engine.ray_launcher import RayLauncher

        return RayLauncher(executor.bus, executor.ray_address, jobs=executor.jobs)

    def make() -> ProcessLauncher:  # psutil and the pipes are imported only when a node needs a worker
        from heiti.engine.workers import ProcessLauncher

        return ProcessLauncher(executor.bus, preload=[cls.__module__ for cls in executor.registry.classes()],
                               size=executor.jobs)

    return OnDemandLauncher(make)


class OnDemandLauncher:
    """The worker pool, made when a node first needs a worker: a run the cache serves whole starts
    none, and never waits for the worker `heiti run` forked early (engine.head_start)."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self.made: ProcessLauncher | None = None

    def _pool(self) -> ProcessLauncher:
        if self.made is None:
            self.made = self._make()
        return self.made

    @property
    def memory(self) -> Any:
        return self.made.memory if self.made is not None else None  # no worker holds memory yet

    def start(self, job: dict[str, Any], resources: dict[str, float] | None = None,
              prefer: set[str] | None = None, imports: list[str] | None = None) -> Handle:
        return self._pool().start(job, resources=resources, prefer=prefer, imports=imports)

    def waits_for_warm_worker(self, node_id: str, imports: list[str]) -> bool:
        return self.made is not None and self.made.waits_for_warm_worker(node_id, imports)

    def warm(self, node_id: str, imports: list[str], prepare: dict[str, Any] | None = None) -> bool:
        return self._pool().warm(node_id, imports, prepare)

    def warming(self) -> bool:
        return self.made is not None and self.made.warming()

    def warmed_or_warming(self, node_id: str) -> bool:
        return self.made is not None and self.made.warmed_or_warming(node_id)

    def poll(self, timeout: float) -> list[Handle]:
        return self.made.poll(timeout) if self.made is not None else []

    def cancel(self) -> None:
        if self.made is not None:
            self.made.cancel()

    def terminate(self) -> None:
        if self.made is not None:
            self.made.terminate()

    def close(self) -> None:
        if self.made is not None:
            self.made.close()


def run_parallel(executor: Executor, graph: Graph, checked: ValidationResult, out_dir: Path,
                 keys: dict[str, str], result: RunResult, t0: float) -> None:
    """Run every node of a validated graph; fills `result.states`, `outputs`, `errors`."""
    launcher = make_launcher(executor)
    under_ray = executor.ray_address is not None
    jobs = executor.jobs
    pending = list(checked.order())
    upstream = {n: {e.src[0] for e in graph.edges_into(n)} for n in pending}
    running: dict[str, tuple[Handle, Any, bool]] = {}  # node -> (handle, prepared, exclusive)
    prepared: dict[str, Any] = {}
    cancel_at: float | None = None
    terminated = False
    try:
        while pending or running:
            if executor.token.cancelled:
                if cancel_at is None:
                    cancel_at = time.monotonic()
                    launcher.cancel()
                    for node_id in pending:
                        result.states[node_id] = NodeState.CANCELLED
                        executor.bus.emit(NodeSkipped(node=node_id, reason="run cancelled", state=NodeState.CANCELLED))
                    pending = []
                elif running and not terminated and time.monotonic() - cancel_at > CANCEL_GRACE_S:
                    launcher.terminate()
                    terminated = True
            else:
                pending = _start_ready(executor, graph, checked, out_dir, keys, result, t0, launcher,
                                       pending, upstream, running, prepared, jobs, under_ray)
                _warm_up_waiting(graph, checked, launcher, pending, upstream, running, result)
            if not running and not _warming(launcher):
                continue
            for handle in launcher.poll(POLL_S):
                entry = running.pop(handle.node_id, None)
                if entry is not None:
                    _finish(executor, handle, entry[1], keys, result)
    finally:
        launcher.close()


def _start_ready(executor: Executor, graph: Graph, checked: ValidationResult, out_dir: Path,
                 keys: dict[str, str], result: RunResult, t0: float, launcher: Any, pending: list[str],
                 upstream: dict[str, set[str]], running: dict[str, tuple[Handle, Any, bool]],
                 prepared: dict[str, Any], jobs: int, under_ray: bool) -> list[str]:
    """Start what may start now; return the nodes still waiting."""
    if any(excl for _, _, excl in running.values()):
        return pending  # a measurement is on: nothing starts beside it
    waiting: list[str] = []
    ready_exclusive: list[str] = []
    for node_id in pending:
        if not upstream[node_id] <= result.states.keys():
            waiting.append(node_id)
            continue
        blocked = executor._blocked_by(graph, checked, node_id, result)
        if blocked:
            result.states[node_id] = NodeState.SKIPPED
            executor.bus.emit(NodeSkipped(node=node_id, reason=f"upstream {', '.join(blocked)} did not finish"))
            continue
        if node_id not in prepared:
            try:
                prepared[node_id] = executor._prepare(graph, checked, node_id, out_dir, keys, result)
            except Exception as err:  # noqa: BLE001 - e.g. a path param that cannot be read
                executor._failed(node_id, result, type(err).__name__, str(err) or type(err).__name__)
                continue
            if prepared[node_id] is None:
                continue  # restored from the cache
        if _exclusive(checked.classes[node_id], checked.params[node_id], under_ray):
            ready_exclusive.append(node_id)
            waiting.append(node_id)
            continue
        if len(running) >= jobs or (running and _short_of_memory(executor, launcher, node_id)):
            waiting.append(node_id)
            continue
        imports = _imports(graph, checked, node_id)
        if getattr(launcher, "waits_for_warm_worker", None) and launcher.waits_for_warm_worker(node_id, imports):
            waiting.append(node_id)  # a worker with its framework is busy, another still imports it
            continue
        _launch(executor, launcher, node_id, prepared[node_id], out_dir, t0, running, result, exclusive=False,
                upstream=upstream[node_id], imports=imports)
    if ready_exclusive and not running and not _warming(launcher):  # nothing else would be running now
        together = executor.interleave and not under_ray and len(ready_exclusive) > 1
        for node_id in ready_exclusive if together else ready_exclusive[:1]:
            if running and _short_of_memory(executor, launcher, node_id):
                break  # the rest take turns later
            _launch(executor, launcher, node_id, prepared[node_id], out_dir, t0, running, result, exclusive=True,
                    upstream=upstream[node_id], turns=together, imports=_imports(graph, checked, node_id))
            waiting.remove(node_id)
    return waiting


def _short_of_memory(executor: Executor, launcher: Any, node_id: str) -> bool:
    """True when the node must wait for memory (engine.memory_gate); says so once per node."""
    gate = getattr(launcher, "memory", None)
    available = gate.short() if gate is not None else None
    if available is None:
        return False
    if node_id not in gate.told:
        gate.told.add(node_id)
        executor.bus.emit(NodeLog(node=node_id, level="info", message=gate.why_waiting(available)))
    return True


def _warming(launcher: Any) -> bool:
    return bool(getattr(launcher, "warming", lambda: False)())


def _warm_up_waiting(graph: Graph, checked: ValidationResult, launcher: Any, pending: list[str],
                     upstream: dict[str, set[str]], running: dict[str, tuple[Handle, Any, bool]],
                     result: RunResult) -> None:
    """Idle workers make the imports of nodes still waiting for their inputs (a framework takes
    seconds to import) and, for a node that has `prepare_ahead`, its own preparation with the inputs
    it already has (a runtime reads its dataset), so those nodes start at once when their inputs arrive.

    Not while a measurement runs, nor when one is about to start or a ready node waits for a slot
    (warming would disturb or delay it); while measuring nodes wait for other work to end, yes. Not
    for the first waiting child of a running node: it will most likely follow in that worker,
    imports and all (its siblings will not: they are warmed elsewhere).
    """
    if not pending or not hasattr(launcher, "warm") or any(excl for _, _, excl in running.values()):
        return
    gate = getattr(launcher, "memory", None)
    if gate is not None and gate.short() is not None:
        return  # a warm worker holds its framework's memory: not while memory is short
    ready = [n for n in pending if upstream[n] <= result.states.keys()]
    if ready and (not running or any(not _exclusive(checked.classes[n], checked.params[n], False) for n in ready)):
        return  # a ready node waits for a slot, or the measurements start now: keep workers free
    # measuring nodes that wait for quiet while other work runs do not need the idle worker: it warms
    # what comes after them (the report, above all, whose imports would otherwise follow the last one)
    waiting = [n for n in pending if n not in ready]
    heirs = {next((n for n in waiting if parent in upstream[n]), None) for parent in running}
    for node_id in waiting:
        if node_id in heirs or launcher.warmed_or_warming(node_id):
            continue
        cls = checked.classes[node_id]
        imports = _imports(graph, checked, node_id)
        prepare = _preparation(graph, cls, checked.params[node_id], node_id, result)
        if (imports or prepare) and not launcher.warm(node_id, imports, prepare):
            return  # no idle worker left


def _preparation(graph: Graph, cls: Any, params: Any, node_id: str, result: RunResult) -> dict[str, Any] | None:
    """For a node that prepares ahead (`prepare_ahead`), its class, params and the single-value
    inputs whose sources are done, as a job carries them; None otherwise."""
    if not callable(getattr(cls, "prepare_ahead", None)):
        return None
    ref = class_ref(cls)
    if ref is None:
        return None
    inputs = {e.dst[1]: result.outputs[e.src[0]][e.src[1]] for e in graph.edges_into(node_id)
              if e.src[1] in result.outputs.get(e.src[0], {}) and not cls.inputs[e.dst[1]].multiple}
    if not inputs:
        return None
    return {"module": ref[0], "qualname": ref[1], "params": params.model_dump(mode="json"),
            "inputs": encode_ports(inputs)}


def _imports(graph: Graph, checked: ValidationResult, node_id: str) -> list[str]:
    """The node's `warm_up_imports` as wired in this graph."""
    wired = frozenset(e.dst[1] for e in graph.edges_into(node_id))
    return list(checked.classes[node_id].warm_up_imports(checked.params[node_id], wired))


def _launch(executor: Executor, launcher: Any, node_id: str, prep: Any, out_dir: Path, t0: float,
            running: dict[str, tuple[Handle, Any, bool]], result: RunResult, exclusive: bool,
            upstream: set[str], turns: bool = False, imports: list[str] | None = None) -> None:
    from heiti.engine.cache import clear_folder

    cls, node, inputs, key, workdir = prep
    clear_folder(workdir)  # never run into files left by an earlier run in this folder
    executor.bus.emit(NodeStarted(node=node_id, kind=cls.kind, key=key))
    try:
        job = make_job(node_id, cls, node.params, inputs, workdir, out_dir, t0)
        job["turns"] = turns  # measuring nodes started together take turns (engine.turns)
        handle = launcher.start(job, resources=dict(getattr(node.params, "ray_resources", None) or {}),
                                prefer=upstream, imports=imports)
    except Exception as err:  # noqa: BLE001 - this node cannot run elsewhere; the others go on
        executor._failed(node_id, result, type(err).__name__, str(err))
        return
    running[node_id] = (handle, prep, exclusive)


def _finish(executor: Executor, handle: Handle, prep: Any, keys: dict[str, str], result: RunResult) -> None:
    cls, _node, _inputs, key, workdir = prep
    message = handle.result or {"result": "failed", "error_type": "WorkerDied", "message": "no result"}
    node_id = handle.node_id
    if message["result"] == "done":
        try:
            outputs = decode_ports(message["outputs"])
        except Exception as err:  # noqa: BLE001 - a payload that does not validate
            executor._failed(node_id, result, type(err).__name__, f"the worker's outputs do not read back: {err}")
            return
        executor._succeeded(node_id, cls, key, workdir, outputs, keys, result, handle.started)
    elif message["result"] == "cancelled":
        executor.token.cancel()
        executor._cancelled(node_id, result)
    else:
        executor._failed(node_id, result, message.get("error_type", "Error"), message.get("message", ""),
                         message.get("traceback", ""))
