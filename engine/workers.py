"""Runs one node outside the executor's process, so that a native crash, an out-of-memory kill or a
framework that never lets go of its memory is that node's problem alone.

A job is plain JSON (engine.jobs: what it holds, and what the worker does with it); only JSON
crosses, nothing is unpickled from a node. One pipe per child (not a shared queue) means a child
killed in the middle of a write cannot block its siblings, and the pipe's end-of-file tells the
parent the child is gone.

Workers come from a fork server (engine.forkserver): a fresh interpreter that has imported Heiti
and the node modules but no framework, so each start is a cheap fork that never copies a TensorFlow
or torch state. A worker runs one node at a time and may then run another (preferably a descendant of one it ran, so
the framework it imported serves again); a crash fails only the node it was running, and a worker
grown past WORKER_RSS_LIMIT is retired after its node, which gives its memory back.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import psutil
from heiti.engine import head_start
from heiti.engine.environ import parent_environment
from heiti.engine.events import Event, EventBus, NodeLog, event_from_dict
from heiti.engine.forkserver import context
from heiti.engine.jobs import worker_main
from heiti.engine.memory_gate import MemoryGate
from heiti.engine.turns import TurnArbiter

#: a worker that holds more than this after a node is retired (its memory goes back to the system)
WORKER_RSS_LIMIT = 1536 * 2**20


@dataclass
class Handle:
    """A node running somewhere else; `result` is set once it is over."""

    node_id: str
    started: float = field(default_factory=time.perf_counter)
    result: dict[str, Any] | None = None
    worker: Worker | None = None
    ref: Any = None  # a Ray object ref


@dataclass
class Worker:
    """One worker process and what it ran (a node's heirs prefer the worker that made their inputs:
    the framework it imported is still there)."""

    process: Any
    conn: Connection
    ran: set[str] = field(default_factory=set)
    handle: Handle | None = None
    last_used: float = 0.0
    warming: str | None = None  # the node whose imports it is making now
    warmed: set[str] = field(default_factory=set)  # nodes whose imports it has made
    #: the imports (`Node.warm_up_imports`) of every node it ran, runs, warmed or warms
    imports: set[str] = field(default_factory=set)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker vanished"
    if code < 0:
        name = _signal_name(code)
        why = {"SIGSEGV": "a native crash", "SIGKILL": "killed, often by the out-of-memory killer",
               "SIGABRT": "aborted by native code", "SIGBUS": "a native crash"}.get(name, "killed")
        return f"the worker process died of {name} ({why})"
    return f"the worker process exited with code {code} before reporting a result"


class ProcessLauncher:
    """Runs nodes in up to `size` worker processes and relays their events to `bus`.

    A worker runs one node at a time and may run several in turn, so a framework imported for one
    node serves the next (a node prefers the worker that ran one of its upstream nodes). A worker
    that dies (segfault, OOM kill) fails only the node it was running; one that grew past
    `rss_limit` after a node is retired, which gives its memory back.
    """

    def __init__(self, bus: EventBus, preload: list[str] | None = None, size: int = 2,
                 rss_limit: int | None = None) -> None:
        self.bus = bus
        self.ctx = context(preload or [])
        early = head_start.take()  # a worker `heiti run` forked while it started (engine.head_start)
        self.cancel_event = early.cancel_event if early is not None else self.ctx.Event()
        self.size = max(1, size)
        self.rss_limit = WORKER_RSS_LIMIT if rss_limit is None else rss_limit
        self.workers: list[Worker] = []
        self.running: dict[str, Handle] = {}
        self.warm_asked: set[str] = set()  # nodes a worker was asked to warm up for (once each)
        self.memory = MemoryGate()  # the scheduler asks it before starting a node beside others
        self.turns = TurnArbiter(lambda handle: handle.worker.conn.send_bytes(b'{"turn": "go"}'))
        if early is not None:
            self.workers.append(Worker(early.process, early.conn, warming=early.node_id))
            if early.node_id is not None:
                self.warm_asked.add(early.node_id)

    def _spawn(self) -> Worker:
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker_main, args=(child_end, self.cancel_event),
                                   name="heiti-worker", daemon=True)
        process.start()
        child_end.close()  # the child holds the only other end: its exit is our end-of-file
        worker = Worker(process, parent_end)
        self.workers.append(worker)
        return worker

    def _retire(self, worker: Worker) -> None:
        self.workers.remove(worker)
        worker.conn.close()  # the worker's loop ends on end-of-file (closing twice is harmless)
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()

    def _pick(self, node_id: str, prefer: set[str], needed: set[str]) -> Worker:
        """A worker for a node: an idle one that has its imports (`needed`) made, or one that made
        them for this node or is making them (the job waits in its pipe), then one that ran an
        upstream node, then a new one while under `size`."""
        for worker in [w for w in self.workers if w.handle is None and not w.process.is_alive()]:
            self.workers.remove(worker)  # died while idle (an OOM kill, say): never give it a node
            worker.conn.close()
        free = [w for w in self.workers if w.handle is None]
        able = [w for w in free if w.warming is None and needed and needed <= w.imports]
        if able:
            return max(able, key=lambda w: (node_id in w.warmed, len(w.ran & prefer)))
        for worker in free:
            if node_id in worker.warmed or worker.warming == node_id:
                return worker
        idle = [w for w in free if w.warming is None]
        for worker in sorted(idle, key=lambda w: -len(w.ran & prefer)):
            if worker.ran & prefer:
                return worker
        if len(self.workers) < self.size or not free:
            return self._spawn()
        if not idle:  # every free worker is warming up for another node: queue behind the shortest wait
            return min(free, key=lambda w: w.last_used)
        return min(idle, key=lambda w: w.last_used)

    def start(self, job: dict[str, Any], resources: dict[str, float] | None = None,
              prefer: set[str] | None = None, imports: list[str] | None = None) -> Handle:
        """Start the job's node in a worker (`resources` are for Ray; a local worker needs none;
        `imports`: the node's `warm_up_imports`)."""
        worker = self._pick(job["node"], prefer or set(), set(imports or ()))
        handle = Handle(job["node"], worker=worker)
        worker.handle = handle
        worker.ran.add(job["node"])
        worker.imports.update(imports or ())
        self.running[handle.node_id] = handle
        if job.get("turns"):
            self.turns.expect(handle)
        try:
            worker.conn.send_bytes(json.dumps(job).encode())
        except OSError:
            pass  # the worker died since its last node: poll() sees the end-of-file
        return handle

    def warm(self, node_id: str, imports: list[str], prepare: dict[str, Any] | None = None) -> bool:
        """Have an idle worker (or a new one, while under `size`) make a waiting node's imports and,
        with `prepare` (the node's class, params and the inputs it has, as in a job), its own
        preparation (`prepare_ahead`)."""
        idle = [w for w in self.workers if w.handle is None and w.warming is None and w.process.is_alive()]
        if not idle and len(self.workers) >= self.size:
            return False
        worker = min(idle, key=lambda w: w.last_used) if idle else self._spawn()
        try:
            worker.conn.send_bytes(json.dumps({"warm": imports, "node": node_id, "prepare": prepare,
                                               **parent_environment()}).encode())
        except OSError:
            return False
        worker.warming = node_id
        worker.imports.update(imports)
        self.warm_asked.add(node_id)
        return True

    def waits_for_warm_worker(self, node_id: str, imports: list[str]) -> bool:
        """Whether a ready node had better wait for a worker that has its imports made than start
        now: no idle worker has them, a busy worker does, and another worker is making them. It
        then starts in whichever of those is free first (a framework's import takes seconds; the
        nodes after one are often shorter: a second TFLite conversion after the first, say).
        Without a warm-up under way it never waits, since the busy worker may be busy for long."""
        needed = set(imports)
        if not needed:
            return False
        free = [w for w in self.workers if w.handle is None]
        if any(w.warming is None and (needed <= w.imports or node_id in w.warmed) for w in free):
            return False
        busy = any(w.handle is not None and needed <= w.imports for w in self.workers)
        making = any(w.warming is not None and needed <= w.imports for w in free)
        return busy and making

    def warming(self) -> bool:
        return any(w.warming is not None for w in self.workers)

    def warmed_or_warming(self, node_id: str) -> bool:
        """Whether a warm-up was asked for the node (done, failed or under way: never twice)."""
        return node_id in self.warm_asked

    def poll(self, timeout: float) -> list[Handle]:
        """Relay what arrived within `timeout`; return the handles that finished."""
        warming = {w.conn: w for w in self.workers if w.warming is not None and w.handle is None}
        if not self.running and not warming:
            return []
        by_conn: dict[Any, Handle | Worker] = {**warming}
        by_conn.update({h.worker.conn: h for h in self.running.values() if h.worker is not None})
        done: list[Handle] = []
        for conn in wait(list(by_conn), timeout):
            handle = by_conn[conn]  # type: ignore[index]
            if isinstance(handle, Worker):  # only warming: its reply, or its end
                self._read_warmed(handle)
                continue
            while True:
                try:
                    message = json.loads(conn.recv_bytes())  # type: ignore[union-attr]
                except (EOFError, OSError):
                    self._died(handle)
                    done.append(handle)
                    break
                if "warmed" in message:
                    assert handle.worker is not None
                    self._warmed(handle.worker, message)
                    if not conn.poll():  # type: ignore[union-attr]
                        break
                    continue
                if "event" in message:
                    self.bus.emit(_event(message["event"]))
                    if not conn.poll():  # type: ignore[union-attr]
                        break
                    continue
                if "turn" in message:  # a measuring node asks for the machine or gives it back
                    (self.turns.want if message["turn"] == "want" else self.turns.done)(handle)
                    if not conn.poll():  # type: ignore[union-attr]
                        break
                    continue
                handle.result = message
                self._released(handle)
                done.append(handle)
                break
        return done

    def _read_warmed(self, worker: Worker) -> None:
        try:
            message = json.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):  # died while importing: it never gets a node
            worker.conn.close()
            worker.process.join(timeout=5)
            if worker in self.workers:
                self.workers.remove(worker)
            return
        self._warmed(worker, message)

    def _warmed(self, worker: Worker, message: dict[str, Any]) -> None:
        node_id = worker.warming
        if node_id is not None:
            if message.get("error"):
                text = f"could not import ahead in a worker: {message['error']}"
            else:
                worker.warmed.add(node_id)
                what = "imports made and inputs prepared" if message.get("prepared") else "imports made"
                text = f"{what} ahead in worker {worker.process.pid} in {float(message.get('seconds', 0)):.2f} s"
            self.bus.emit(NodeLog(node=node_id, level="debug", message=text))
        worker.warming, worker.last_used = None, time.monotonic()

    def _released(self, handle: Handle) -> None:
        worker = handle.worker
        self.running.pop(handle.node_id, None)
        self.turns.gone(handle)
        if worker is None:
            return
        worker.handle, worker.last_used = None, time.monotonic()
        try:
            rss = psutil.Process(worker.process.pid).memory_info().rss
        except psutil.Error:
            rss = 0
        self.memory.saw(rss)
        if rss > self.rss_limit:
            self._retire(worker)

    def _died(self, handle: Handle) -> None:
        worker = handle.worker
        assert worker is not None
        self.turns.gone(handle)
        worker.process.join(timeout=10)
        if handle.result is None:
            if self.cancel_event.is_set():
                handle.result = {"result": "cancelled"}
            else:
                handle.result = {"result": "failed", "error_type": "WorkerDied",
                                 "message": describe_exit(worker.process.exitcode), "traceback": ""}
        worker.conn.close()
        if worker in self.workers:
            self.workers.remove(worker)
        self.running.pop(handle.node_id, None)

    def cancel(self) -> None:
        self.cancel_event.set()
        self.turns.release_all()

    def terminate(self) -> None:
        """Stop the busy workers now (SIGTERM, then SIGKILL for those that ignore it)."""
        busy = [h.worker for h in self.running.values() if h.worker is not None]
        for worker in busy:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + 2.0
        for worker in busy:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()

    def close(self) -> None:
        """End every worker: busy ones are terminated, idle ones leave on end-of-file, and one still
        importing for a node that will not run now is killed (an import cannot be interrupted)."""
        self.terminate()
        for worker in self.workers:
            if worker.warming is not None and worker.process.is_alive():
                worker.process.kill()
        for worker in self.workers:  # all told at once: they give their memory back side by side
            worker.conn.close()
        for worker in list(self.workers):
            self._retire(worker)
        self.running.clear()


def _event(data: dict[str, Any]) -> Event:
    return event_from_dict(data)
