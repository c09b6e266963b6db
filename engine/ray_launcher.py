"""Runs nodes as Ray tasks on an existing cluster (the optional `heiti[cluster]` extra).

Same contract as the local worker launcher: `start(job)`, `poll(timeout)`, `cancel()`,
`terminate()`, `close()`. A task runs `execute_job`, the code a local worker runs; its events go
through a Ray queue to the parent's bus as they happen, and its result comes back as the same JSON
form. Files do not travel: the run folder and the cache must be on storage every machine sees
under the same path (see docs/scaling.md). A node's `ray_resources` param (e.g. {"board-a": 1})
becomes the task's custom resources, so a board measures only the runtimes meant for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from heiti.engine.events import EventBus, event_from_dict
from heiti.engine.jobs import execute_job
from heiti.engine.scheduler import ClusterUnavailable
from heiti.engine.workers import Handle


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ClusterUnavailable("--ray needs Ray: pip install 'heiti[cluster]'") from err
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself waits minutes before giving up)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray answers those at once
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {err} "
                                 "(start one with `ray start --head`, or check --ray HOST:PORT)") from err


def connect(address: str | None) -> Any:
    """Join the cluster at `address` ("auto", "ray://host:10001"); "" starts a local one."""
    ray = import_ray()
    if not ray.is_initialized():
        if address:
            _probe(address)
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except Exception as err:  # noqa: BLE001 - Ray raises many kinds; all mean the same here
            raise ClusterUnavailable(
                f"cannot join the Ray cluster at {address or 'a new local cluster'}: {err} "
                "(start one with `ray start --head`, or give --ray ray://HOST:10001)") from err
    return ray


def _task(job_text: str, queue: Any, flag: Any) -> str:
    """Body of the Ray task: one node, events into `queue`, the result as JSON text."""
    import ray

    last_check = [0.0, False]

    def send(message: dict[str, Any]) -> None:
        queue.put(json.dumps(message, default=str))

    def cancelled() -> bool:  # asks the flag actor at most every half second
        now = time.monotonic()
        if now - last_check[0] > 0.5:
            last_check[0] = now
            last_check[1] = bool(ray.get(flag.is_set.remote()))
        return bool(last_check[1])

    return json.dumps(execute_job(json.loads(job_text), send, cancelled), default=str)


class _Flag:
    """A cancel flag the tasks can read from anywhere in the cluster."""

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


class RayLauncher:
    def __init__(self, bus: EventBus, address: str | None, jobs: int = 1) -> None:
        self.ray = connect(address)
        from ray.util.queue import Queue

        self.bus = bus
        self.queue = Queue()
        self.flag = self.ray.remote(num_cpus=0)(_Flag).remote()
        self.remote_task = self.ray.remote(_task)
        self.running: dict[str, Handle] = {}
        self.cancelled = False

    def start(self, job: dict[str, Any], resources: dict[str, float] | None = None,
              prefer: set[str] | None = None, imports: list[str] | None = None) -> Handle:
        job = dict(job, env={k: v for k, v in job["env"].items() if k.startswith(("HEITI_", "TF_"))})
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if resources:
            options["resources"] = dict(resources)
        ref = self.remote_task.options(**options).remote(json.dumps(job), self.queue, self.flag)
        handle = Handle(job["node"], ref=ref)
        self.running[handle.node_id] = handle
        return handle

    def _drain(self) -> None:
        while True:
            try:
                items = self.queue.get_nowait_batch(max(1, self.queue.qsize()))
            except Exception:  # noqa: BLE001 - Empty
                return
            if not items:
                return
            for text in items:
                message = json.loads(text)
                if "event" in message:
                    self.bus.emit(event_from_dict(message["event"]))

    def poll(self, timeout: float) -> list[Handle]:
        if not self.running:
            return []
        by_ref = {h.ref: h for h in self.running.values()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        self._drain()
        done = []
        for ref in ready:
            handle = by_ref[ref]
            try:
                handle.result = json.loads(self.ray.get(ref))
            except Exception as err:  # noqa: BLE001 - the task or its worker died
                if self.cancelled:
                    handle.result = {"result": "cancelled"}
                else:
                    handle.result = {"result": "failed", "error_type": type(err).__name__,
                                     "message": f"the Ray task failed: {err}", "traceback": ""}
            self.running.pop(handle.node_id, None)
            done.append(handle)
        if done:
            self._drain()
        return done

    def cancel(self) -> None:
        self.cancelled = True
        self.flag.set.remote()

    def terminate(self) -> None:
        for handle in self.running.values():
            self.ray.cancel(handle.ref, force=True)

    def close(self) -> None:
        if self.running:
            self.terminate()
        self.running.clear()
        self._drain()
        try:
            self.queue.shutdown()
            self.ray.kill(self.flag)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass
