"""Runs one node outside the executor's process, so that a native crash, an out-of-memory kill or a
framework that never lets go of its memory is that node's problem alone.

A job is plain JSON: the node's class (module and name), params, inputs in the cache's payload form,
its folders and the parent's environment. The child sends back, over its own pipe, the node's events
as they happen and, last, one result message with the outputs in the same JSON form. Nothing is
unpickled from a node: only JSON crosses. One pipe per child (not a shared queue) means a child
killed in the middle of a write cannot block its siblings, and the pipe's end-of-file tells the
parent the child is gone.

Workers come from a fork server: a fresh interpreter that has imported Heiti and the node modules
but no framework, so each start is a cheap fork that never copies a TensorFlow or torch state. A
worker runs one node at a time and may then run another (preferably a descendant of one it ran, so
the framework it imported serves again); a crash fails only the node it was running, and a worker
grown past WORKER_RSS_LIMIT is retired after its node, which gives its memory back.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import psutil
from heiti.engine import collector
from heiti.engine.context import Cancelled, RunContext
from heiti.engine.events import Event, EventBus, NodeLog, event_from_dict
from heiti.engine.node import Node, NodeError
from heiti.engine.payloads import Payload

START_METHOD = "forkserver"
#: seconds a cancelled worker gets to stop by itself before it is terminated
CANCEL_GRACE_S = 5.0
#: a worker that holds more than this after a node is retired (its memory goes back to the system)
WORKER_RSS_LIMIT = 1536 * 2**20
_ENV_SKIP = ("PWD", "OLDPWD", "SHLVL", "_")


class ClusterUnavailable(Exception):
    """Nodes cannot be sent where they were asked to run (Ray missing, cluster unreachable)."""


# --- payloads as JSON ---------------------------------------------------------------------------
def encode_value(value: Any) -> Any:
    """One port value (a payload, a list of them for `multiple` ports, or plain JSON) as JSON."""
    if isinstance(value, Payload):
        return {"type": type(value).__name__, "data": value.model_dump(mode="json")}
    if isinstance(value, list):
        return {"items": [encode_value(v) for v in value]}
    return {"type": None, "data": value}


def decode_value(data: dict[str, Any]) -> Any:
    if "items" in data:
        return [decode_value(v) for v in data["items"]]
    cls = Payload.registry.get(data["type"]) if data.get("type") else None
    return cls.model_validate(data["data"]) if cls else data["data"]


def encode_ports(values: dict[str, Any]) -> dict[str, Any]:
    return {port: encode_value(v) for port, v in values.items()}


def decode_ports(data: dict[str, Any]) -> dict[str, Any]:
    return {port: decode_value(v) for port, v in data.items()}


# --- the job ------------------------------------------------------------------------------------
def class_ref(cls: type[Node]) -> tuple[str, str] | None:
    """(module, qualified name) when a child can import the class by name, else None."""
    try:
        obj: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return (cls.__module__, cls.__qualname__) if obj is cls else None


def make_job(node_id: str, cls: type[Node], params: Any, inputs: dict[str, Any], workdir: Path,
             out_dir: Path, run_t0: float) -> dict[str, Any]:
    ref = class_ref(cls)
    if ref is None:
        raise ValueError(f"{cls.kind}: its class cannot be imported by name, so it cannot run in a worker")
    return {
        "node": node_id, "module": ref[0], "qualname": ref[1],
        "params": params.model_dump(mode="json"), "inputs": encode_ports(inputs),
        "workdir": str(workdir), "out_dir": str(out_dir), "run_t0": run_t0,
        **_environment(),
    }


def _environment() -> dict[str, Any]:
    """The parent's present environment, folder and import path, for a worker to adopt."""
    return {"env": {k: v for k, v in os.environ.items() if k not in _ENV_SKIP},
            "cwd": os.getcwd(), "sys_path": list(sys.path)}


class _EventToken:
    """The CancelToken interface over a flag another process sets."""

    def __init__(self, is_set: Callable[[], bool]) -> None:
        self._is_set = is_set

    def cancel(self) -> None:  # a node cannot cancel the whole run from a worker
        pass

    @property
    def cancelled(self) -> bool:
        return self._is_set()


def _adopt_environment(job: dict[str, Any]) -> None:
    """The fork server started earlier than this run: take the parent's present env, cwd, path."""
    os.environ.update(job.get("env", {}))
    if os.path.isdir(job.get("cwd", "")):
        os.chdir(job["cwd"])
    for entry in job.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)


def _node_class(job: dict[str, Any]) -> type[Node]:
    obj: Any = importlib.import_module(job["module"])
    for part in job["qualname"].split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def execute_job(job: dict[str, Any], send: Callable[[dict[str, Any]], None],
                cancelled: Callable[[], bool]) -> dict[str, Any]:
    """Run the node a job describes; its events go to `send`; returns the result message."""
    _adopt_environment(job)
    try:
        cls = _node_class(job)
        node = cls(cls.Params.model_validate(job["params"]))
        inputs = decode_ports(job["inputs"])
    except Exception as err:  # noqa: BLE001 - reported as this node's failure
        return {"result": "failed", "error_type": type(err).__name__, "message": f"worker could not load the node: {err}",
                "traceback": traceback.format_exc()}
    bus = EventBus()
    bus.subscribe(lambda event: send({"event": event.to_dict()}))
    workdir, out_dir = Path(job["workdir"]), Path(job["out_dir"])
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(job["node"], workdir, out_dir, bus, _EventToken(cancelled), run_t0=job["run_t0"])  # type: ignore[arg-type]
    try:
        outputs = node.run(ctx, **inputs) or {}
        missing = [p for p in cls.outputs if p not in outputs]
        if missing:
            raise NodeError(f"{cls.kind} produced no value for output(s) {', '.join(missing)}")
        node.publish(out_dir, job["node"], outputs)
        return {"result": "done", "outputs": encode_ports(outputs)}
    except (Cancelled, KeyboardInterrupt):
        return {"result": "cancelled"}
    except Exception as err:  # noqa: BLE001 - isolate the failure to this node
        tb = "" if isinstance(err, NodeError) else traceback.format_exc()
        return {"result": "failed", "error_type": type(err).__name__, "message": str(err) or type(err).__name__,
                "traceback": tb}


def warm_up(imports: list[str]) -> str:
    """Make a node's imports ahead of its run ("module" or "module:function"); "" or the first error.

    A failure here is not the node's failure: the node imports again when it runs and reports
    whatever goes wrong then, in its own words.
    """
    for item in imports:
        module, _, function = item.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception as err:  # noqa: BLE001 - see above
            return f"{item}: {type(err).__name__}: {err}"
    return ""


def prepare_ahead(job: dict[str, Any]) -> str:
    """A waiting node's own preparation with the inputs it already has (`prepare_ahead(params,
    inputs)` on its class, e.g. a runtime reading its dataset): "" or what went wrong. As for the
    imports, a failure is not the node's: it does the work itself when it runs."""
    try:
        cls = _node_class(job)
        cls.prepare_ahead(cls.Params.model_validate(job["params"]), decode_ports(job["inputs"]))  # type: ignore[attr-defined]
    except Exception as err:  # noqa: BLE001 - see above
        return f"preparing ahead: {type(err).__name__}: {err}"
    return ""


def worker_main(conn: Connection, cancel_event: Any) -> None:
    """Entry point of a worker process: runs the jobs it is sent, one at a time, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    lock = threading.Lock()  # resource samplers emit metrics from their own threads

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message, default=str).encode()
        with lock:
            conn.send_bytes(data)

    try:
        while True:
            try:
                job_text = conn.recv_bytes()
            except (EOFError, OSError):
                return
            message = json.loads(job_text)
            if "warm" in message:
                _adopt_environment(message)  # a plug-in's module may need the run's path or env
                started = time.perf_counter()
                error = warm_up(message["warm"])
                collector.settle()
                if not error and message.get("prepare"):
                    error = prepare_ahead(message["prepare"])
                send({"warmed": message["node"], "seconds": time.perf_counter() - started, "error": error,
                      "prepared": bool(message.get("prepare")) and not error})
                continue
            send(execute_job(message, send, cancel_event.is_set))
    finally:
        conn.close()


# --- the parent's side ----------------------------------------------------------------------------
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


_preloaded = False


def _context(preload: list[str]) -> Any:
    """The fork-server context; its server imports the registered node kinds and `preload` once."""
    global _preloaded
    ctx = mp.get_context(START_METHOD)
    if not _preloaded:  # the server starts once per process; later lists would be ignored
        ctx.set_forkserver_preload(["heiti.engine.worker_preload", *sorted(set(preload))])
        _preloaded = True
    return ctx


def start_fork_server() -> None:
    """Start the fork server now: it imports the node kinds in its own process while this one loads
    and validates the graph, so the first worker is ready when the first node needs one."""
    from multiprocessing import forkserver

    _context([])
    forkserver.ensure_running()


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
        self.ctx = _context(preload or [])
        self.cancel_event = self.ctx.Event()
        self.size = max(1, size)
        self.rss_limit = WORKER_RSS_LIMIT if rss_limit is None else rss_limit
        self.workers: list[Worker] = []
        self.running: dict[str, Handle] = {}
        self.warm_asked: set[str] = set()  # nodes a worker was asked to warm up for (once each)

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

    def _pick(self, node_id: str, prefer: set[str]) -> Worker:
        """A worker for a node: one that made its imports (or is making them: the job waits in its
        pipe), then one that ran an upstream node, then a new one while under `size`."""
        for worker in [w for w in self.workers if w.handle is None and not w.process.is_alive()]:
            self.workers.remove(worker)  # died while idle (an OOM kill, say): never give it a node
            worker.conn.close()
        free = [w for w in self.workers if w.handle is None]
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
              prefer: set[str] | None = None) -> Handle:
        """Start the job's node in a worker (`resources` are for Ray; a local worker needs none)."""
        worker = self._pick(job["node"], prefer or set())
        handle = Handle(job["node"], worker=worker)
        worker.handle = handle
        worker.ran.add(job["node"])
        self.running[handle.node_id] = handle
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
                                               **_environment()}).encode())
        except OSError:
            return False
        worker.warming = node_id
        self.warm_asked.add(node_id)
        return True

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
        if worker is None:
            return
        worker.handle, worker.last_used = None, time.monotonic()
        try:
            rss = psutil.Process(worker.process.pid).memory_info().rss
        except psutil.Error:
            rss = 0
        if rss > self.rss_limit:
            self._retire(worker)

    def _died(self, handle: Handle) -> None:
        worker = handle.worker
        assert worker is not None
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
