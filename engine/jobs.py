"""A node's job as plain JSON, and what a worker process does with it.

A job names the node's class (module and name), its params, its inputs in the cache's payload form,
its folders and the parent's environment. The worker sends back, over its own pipe, the node's
events as they happen and, last, one result message with the outputs in the same JSON form.
Nothing is unpickled from a node: only JSON crosses. Between jobs a worker may be asked to make a
waiting node's imports (and its own preparation) ahead, so the node starts warm.
"""

from __future__ import annotations

import importlib
import json
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine import collector
from heiti.engine.context import Cancelled, RunContext
from heiti.engine.environ import adopt_environment, parent_environment
from heiti.engine.events import EventBus
from heiti.engine.node import Node, NodeError
from heiti.engine.payloads import Payload
from heiti.engine.turns import Turn

if TYPE_CHECKING:
    from multiprocessing.connection import Connection  # the parent that only restores needs no pipes


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
        **parent_environment(),
    }


class _EventToken:
    """The CancelToken interface over a flag another process sets."""

    def __init__(self, is_set: Callable[[], bool]) -> None:
        self._is_set = is_set

    def cancel(self) -> None:  # a node cannot cancel the whole run from a worker
        pass

    @property
    def cancelled(self) -> bool:
        return self._is_set()


def _node_class(job: dict[str, Any]) -> type[Node]:
    obj: Any = importlib.import_module(job["module"])
    for part in job["qualname"].split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def execute_job(job: dict[str, Any], send: Callable[[dict[str, Any]], None],
                cancelled: Callable[[], bool], recv: Callable[[], bytes] | None = None) -> dict[str, Any]:
    """Run the node a job describes; its events go to `send`; returns the result message. With
    `recv` (the worker's pipe) a job marked `turns` takes turns with the other measuring nodes."""
    adopt_environment(job)
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
    whole = False
    if job.get("turns") and recv is not None:
        ctx.turn = _pipe_turn(send, recv)
        whole = not getattr(cls, "takes_turns", False)  # it does not share: it holds the machine throughout
    try:
        if whole:
            ctx.turn.take()
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
    finally:
        ctx.turn.give()  # whatever the node still held (nothing when it gave its turns back itself)


def _pipe_turn(send: Callable[[dict[str, Any]], None], recv: Callable[[], bytes]) -> Turn:
    """Turns asked of and granted by the parent over the worker's pipe (engine.turns)."""

    def wait() -> None:
        reply = json.loads(recv())
        if reply != {"turn": "go"}:
            raise RuntimeError(f"expected the parent to grant a turn, got {reply!r}")

    return Turn(ask=lambda: send({"turn": "want"}), wait=wait, release=lambda: send({"turn": "done"}))


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


def _head_start(spec: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Say which node this early worker makes the imports of (engine.head_start), and return the
    warm-up message for it (None: no node to warm)."""
    from heiti.engine.head_start import choose

    node_id, imports = choose(spec)
    send({"head_start": node_id})
    return {"warm": imports, "node": node_id} if node_id is not None else None


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
            if "head_start" in message:  # forked while the command starts: choose a node, import for it
                adopt_environment(message)
                message = _head_start(message["head_start"], send)
                if message is None:
                    continue
            if "warm" in message:
                adopt_environment(message)  # a plug-in's module may need the run's path or env
                started = time.perf_counter()
                error = warm_up(message["warm"])
                collector.settle()
                if not error and message.get("prepare"):
                    error = prepare_ahead(message["prepare"])
                send({"warmed": message["node"], "seconds": time.perf_counter() - started, "error": error,
                      "prepared": bool(message.get("prepare")) and not error})
                continue
            send(execute_job(message, send, cancel_event.is_set, recv=conn.recv_bytes))
    finally:
        conn.close()
