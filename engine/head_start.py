"""A head start for the first node's framework: a worker that begins while `heiti run` still starts.

`heiti run` spends its first ~0.9 s importing Heiti, loading and validating the graph and laying
out the run folder, and the first node's framework import (TensorFlow: ~5 s) only began after
that. Now the command asks the fork server for one worker as soon as the server is up (on a
thread: the server must finish its own imports first), sends it the graph file, and the worker
reads the graph itself and makes the imports of the first input-free node that has any and that
the cache does not hold. The executor's ProcessLauncher adopts this worker as its first one, and
the scheduler hands it that node as it would to any worker that made a node's imports ahead.

The worker's choice is a guess made with the same rules as the run: if the guess is wrong, the
cost is one import the run did not need (the launcher kills a worker still importing at the end).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: how long the executor waits for the worker to say which node it chose (it reads one small file)
CHOICE_TIMEOUT_S = 10.0


@dataclass
class EarlyWorker:
    """A worker forked before the run's launcher existed, and the node it is importing for."""

    process: Any
    conn: Any
    cancel_event: Any
    node_id: str | None


class _HeadStart:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.process: Any = None
        self.conn: Any = None
        self.cancel_event: Any = None
        self.thread = threading.Thread(target=self._fork, name="heiti-head-start", daemon=True)
        self.thread.start()

    def _fork(self) -> None:
        try:
            from heiti.engine.environ import parent_environment
            from heiti.engine.forkserver import context

            ctx = context([])
            self.cancel_event = ctx.Event()
            parent_end, child_end = ctx.Pipe(duplex=True)
            process = ctx.Process(target=_worker, args=(child_end, self.cancel_event),
                                  name="heiti-worker", daemon=True)
            process.start()  # waits until the fork server has made its own imports
            child_end.close()
            parent_end.send_bytes(json.dumps({"head_start": self.spec, **parent_environment()}).encode())
            self.process, self.conn = process, parent_end
        except Exception:  # noqa: BLE001 - no head start (the fork server failed?): the run starts its workers itself
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.conn.close()
            if self.process.is_alive():
                self.process.kill()
            self.process.join(timeout=5)

    def end(self) -> None:
        """Wait for the fork in flight, then end the worker. Not sooner: a worker forked after this
        process left would find the cancel flag's semaphore gone and print a traceback."""
        self.thread.join()
        self.stop()


def _worker(conn: Any, cancel_event: Any) -> None:
    """The early worker's entry (engine.jobs is imported in the child, not on the command's thread,
    which must not import Heiti's modules beside the main thread doing the same)."""
    from heiti.engine.jobs import worker_main

    worker_main(conn, cancel_event)


_pending: _HeadStart | None = None


def begin(graph_path: str | Path, use_cache: bool, cache_dir: str | Path | None) -> None:
    """Fork the early worker for this graph (`cache_dir` None: the executor's default cache)."""
    global _pending
    if _pending is None:
        spec = {"graph": str(Path(graph_path).absolute()), "use_cache": use_cache,
                "cache": str(Path(cache_dir).absolute()) if cache_dir else None}
        _pending = _HeadStart(spec)


def take() -> EarlyWorker | None:
    """The early worker and its chosen node, once; None if there is none or it did not answer."""
    global _pending
    head, _pending = _pending, None
    if head is None:
        return None
    head.thread.join()
    if head.process is None:
        return None
    try:
        if not head.conn.poll(CHOICE_TIMEOUT_S):
            raise TimeoutError("no choice")
        node_id = json.loads(head.conn.recv_bytes())["head_start"]
    except (OSError, EOFError, TimeoutError, ValueError, KeyError, TypeError):
        head.end()
        return None
    return EarlyWorker(head.process, head.conn, head.cancel_event, node_id)


def release() -> None:
    """End an early worker no run took (the graph was invalid, or the command stopped before)."""
    global _pending
    head, _pending = _pending, None
    if head is not None:
        head.end()


def choose(spec: dict[str, Any]) -> tuple[str | None, list[str]]:
    """In the worker: the first input-free node in the file (the run's order for such nodes) that
    has imports to make and is not in the cache, and those imports; (None, []) when there is none.

    No validation here (it would import networkx first: 0.15 s before the framework's import);
    a node whose params do not validate is passed over, and the command reports it.
    """
    from heiti.engine.cache import ArtifactCache, default_cache_dir, node_key
    from heiti.engine.digests import DigestMemo
    from heiti.engine.graph import load_graph
    from heiti.engine.migrations import instantiate_params
    from heiti.engine.paths import resolve_graph_paths
    from heiti.engine.registry import default_registry

    try:
        registry = default_registry()
        graph = resolve_graph_paths(load_graph(spec["graph"]), registry)
    except Exception:  # noqa: BLE001 - the command reports what is wrong with the graph
        return None, []
    cache = ArtifactCache(Path(spec["cache"] or default_cache_dir())) if spec.get("use_cache") else None
    memo = DigestMemo(cache.root / "digests.json") if cache is not None else None
    fed = {edge.dst[0] for edge in graph.edges}
    for node in graph.nodes:
        if node.id in fed or node.kind not in registry:
            continue
        cls = registry.get(node.kind)
        try:
            params = instantiate_params(cls, node.params, node.version)
            imports = list(cls.warm_up_imports(params, frozenset()))
            if not imports:
                continue
            if cache is not None and cls.cacheable and cache.lookup(
                    node_key(cls.kind, cls.version, params, {}, cls.path_params, memo=memo)):
                continue
        except Exception:  # noqa: BLE001 - params or a path the run will refuse: no guess for this node
            continue
        return node.id, imports
    return None, []
