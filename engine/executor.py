"""Runs a validated graph: topological order, cache, events, failure isolation, cancellation.

The executor is headless and synchronous; the CLI calls it directly and the editor calls it on a
worker thread. Every run writes `graph.json` (as run), `events.jsonl` and `nodes/<id>/` into its
output folder.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heiti.engine.cache import ArtifactCache, CorruptEntry, clear_folder, default_cache_dir, node_key
from heiti.engine.context import Cancelled, CancelToken, RunContext
from heiti.engine.digests import DigestMemo
from heiti.engine.events import (
    EventBus,
    JsonlWriter,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeLog,
    NodeSkipped,
    NodeStarted,
    RunFinished,
    RunStarted,
    Subscriber,
)
from heiti.engine.graph import Graph
from heiti.engine.migrations import upgraded
from heiti.engine.node import Node, NodeError
from heiti.engine.paths import resolve_graph_paths, run_folder
from heiti.engine.payloads import Payload, RunInfo
from heiti.engine.registry import Registry, default_registry
from heiti.engine.states import NodeState
from heiti.engine.validate import ValidationResult, validate
from heiti.engine.verdicts import Verdicts


class InvalidGraph(Exception):
    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        super().__init__("; ".join(str(p) for p in result.problems))


@dataclass
class RunResult:
    status: str  # ok | failed | cancelled
    out_dir: Path
    states: dict[str, NodeState] = field(default_factory=dict)  # a StrEnum: compares equal to "done" etc.
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    #: the files the nodes' path params name (engine.run_hints notes their identity)
    input_files: list[str] = field(default_factory=list)
    #: the run ended ok and the cache now holds every node (a re-run would be served whole)
    cache_holds_all: bool = False
    #: each node's cache key (engine.run_hints keeps them for the next run's prefetch)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "failed": 2, "cancelled": 130}[self.status]


def default_out_dir(graph: Graph, base: Path = Path("runs")) -> Path:
    return run_folder(graph.name, base)


def _summary(outputs: dict[str, Any]) -> dict[str, Any]:
    """A small, JSON-friendly digest of a node's outputs for events and the CLI table."""
    summary: dict[str, Any] = {}
    for port, value in outputs.items():
        if isinstance(value, Payload):
            fmt = value.format
            summary[port] = type(value).__name__ + (f" ({fmt})" if fmt else "")
            extra = getattr(value, "summary", None)
            if isinstance(extra, dict):
                summary.update({k: v for k, v in extra.items() if isinstance(v, int | float | str)})
        else:
            summary[port] = repr(value)[:80]
    return summary


class Executor:
    def __init__(
        self,
        registry: Registry | None = None,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        jobs: int = 1,
        ray_address: str | None = None,
        interleave: bool = False,
        prefetch: Any = None,
    ) -> None:
        """`jobs` > 1 runs independent nodes at once, each in its own worker process; 1 runs them
        here, one after the other. `ray_address` ("auto", "ray://host:10001", or "" for a local
        cluster) runs every node as a Ray task instead. `interleave` (with jobs > 1, not on Ray):
        measuring nodes ready together are timed in turns, block by block (engine.turns).
        `prefetch` (engine.prefetch) holds copies of cached files made while the command started."""
        self.registry = registry or default_registry()
        self.cache = ArtifactCache(cache_dir or default_cache_dir()) if use_cache else None
        #: input files' digests remembered beside the cache (no cache: every run reads them)
        self.digests = DigestMemo(self.cache.root / "digests.json") if self.cache is not None else None
        #: graph structures that passed validation, beside the cache (engine.verdicts)
        self.verdicts = Verdicts(self.cache.root / "verdicts.json") if self.cache is not None else None
        self.bus = EventBus()
        self.token = CancelToken()
        self.jobs = max(1, int(jobs))
        self.ray_address = ray_address
        self.interleave = bool(interleave)
        self.prefetch = prefetch

    def subscribe(self, fn: Subscriber) -> Any:
        return self.bus.subscribe(fn)

    def cancel(self) -> None:
        self.token.cancel()

    def run(self, graph: Graph, out_dir: Path | None = None) -> RunResult:
        """Validate, then run every node; raises InvalidGraph before doing anything if invalid."""
        graph = resolve_graph_paths(graph, self.registry)  # relative path params: from the graph's folder
        checked = validate(graph, self.registry, verdicts=self.verdicts)
        if not checked.ok:
            raise InvalidGraph(checked)
        out_dir = Path(out_dir) if out_dir else default_out_dir(graph)
        out_dir.mkdir(parents=True, exist_ok=True)
        upgraded(graph, self.registry).save(out_dir / "graph.json", durable=False)  # as run, versions stamped
        writer = JsonlWriter(out_dir / "events.jsonl")
        unsubscribe = self.bus.subscribe(writer)
        try:
            result = self._run(graph, checked, out_dir)
        finally:
            unsubscribe()
            writer.close()
        result.input_files = [str(Path(value).expanduser()) for node_id, cls in checked.classes.items()
                              for name in cls.path_params
                              if (value := str(getattr(checked.params.get(node_id), name, "") or ""))]
        result.cache_holds_all = (self.cache is not None and result.status == "ok"
                                  and all(cls.cacheable for cls in checked.classes.values()))
        return result

    def _run(self, graph: Graph, checked: ValidationResult, out_dir: Path) -> RunResult:
        t0 = time.perf_counter()
        order = checked.order()
        result = RunResult(status="ok", out_dir=out_dir)
        keys: dict[str, str] = {}
        self.bus.emit(RunStarted(graph=graph.name, out_dir=str(out_dir), order=order))
        if self.jobs > 1 or self.ray_address is not None:
            from heiti.engine.scheduler import run_parallel

            run_parallel(self, graph, checked, out_dir, keys, result, t0)
            order = []  # every node has its state already
        for node_id in order:
            blocked = self._blocked_by(graph, checked, node_id, result)
            if self.token.cancelled:
                result.states[node_id] = NodeState.CANCELLED
                self.bus.emit(NodeSkipped(node=node_id, reason="run cancelled", state=NodeState.CANCELLED))
                continue
            if blocked:
                result.states[node_id] = NodeState.SKIPPED
                self.bus.emit(NodeSkipped(node=node_id, reason=f"upstream {', '.join(blocked)} did not finish"))
                continue
            self._run_node(graph, checked, node_id, out_dir, keys, result, t0)

        result.keys = dict(keys)
        states = list(result.states.values())
        if self.token.cancelled or "cancelled" in states:
            result.status = "cancelled"
        elif "failed" in states or "skipped" in states:
            result.status = "failed"
        result.duration_s = time.perf_counter() - t0
        counts = {s: states.count(s) for s in sorted(set(states))}
        self.bus.emit(RunFinished(status=result.status, duration_s=result.duration_s, counts=counts, out_dir=str(out_dir)))
        return result

    @staticmethod
    def _blocked_by(graph: Graph, checked: ValidationResult, node_id: str, result: RunResult) -> list[str]:
        """Upstream nodes that did not finish and that this node cannot do without."""
        ports = checked.classes[node_id].inputs
        finished = ("done", "cached")
        missing: set[str] = set()
        arrived: dict[str, int] = {}
        for edge in graph.edges_into(node_id):
            ok = result.states.get(edge.src[0]) in finished
            arrived[edge.dst[1]] = arrived.get(edge.dst[1], 0) + ok
            if not ok and not ports[edge.dst[1]].partial:
                missing.add(edge.src[0])
        for name, port in ports.items():
            if port.partial and port.required and name in arrived and not arrived[name]:
                missing.update(e.src[0] for e in graph.edges_into(node_id) if e.dst[1] == name)
        return sorted(missing)

    def _run_node(self, graph: Graph, checked: ValidationResult, node_id: str, out_dir: Path,
                  keys: dict[str, str], result: RunResult, t0: float) -> None:
        try:
            prepared = self._prepare(graph, checked, node_id, out_dir, keys, result)
        except Exception as err:  # noqa: BLE001 - e.g. a path param naming `/` or a FIFO: this node's failure
            self._failed(node_id, result, type(err).__name__, str(err) or type(err).__name__)
            return
        if prepared is None:
            return  # restored from the cache
        cls, node, inputs, key, workdir = prepared
        clear_folder(workdir)  # never run into files left by an earlier run in this folder
        ctx = RunContext(node_id, workdir, out_dir, self.bus, self.token, run_t0=t0)
        self.bus.emit(NodeStarted(node=node_id, kind=cls.kind, key=key))
        started = time.perf_counter()
        try:
            outputs = node.run(ctx, **inputs) or {}
            missing = [p for p in cls.outputs if p not in outputs]
            if missing:
                raise NodeError(f"{cls.kind} produced no value for output(s) {', '.join(missing)}")
            node.publish(out_dir, node_id, outputs)
        except (Cancelled, KeyboardInterrupt):
            self.token.cancel()
            self._cancelled(node_id, result)
            return
        except Exception as err:  # noqa: BLE001 - isolate the failure to this node
            tb = "" if isinstance(err, NodeError) else traceback.format_exc()
            self._failed(node_id, result, type(err).__name__, str(err) or type(err).__name__, tb)
            return
        self._succeeded(node_id, cls, key, workdir, outputs, keys, result, started)

    def _cancelled(self, node_id: str, result: RunResult) -> None:
        result.states[node_id] = NodeState.CANCELLED
        result.errors[node_id] = "cancelled"
        self.bus.emit(NodeFailed(node=node_id, error_type="Cancelled", message="cancelled by the user",
                                 state=NodeState.CANCELLED))

    def _failed(self, node_id: str, result: RunResult, error_type: str, message: str, tb: str = "") -> None:
        result.states[node_id] = NodeState.FAILED
        result.errors[node_id] = message
        self.bus.emit(NodeFailed(node=node_id, error_type=error_type, message=message, traceback=tb))

    def _succeeded(self, node_id: str, cls: type[Node], key: str, workdir: Path, outputs: dict[str, Any],
                   keys: dict[str, str], result: RunResult, started: float) -> None:
        """Record a finished node and store it in the cache (the parent stores, workers never do)."""
        result.outputs[node_id] = outputs
        result.states[node_id] = NodeState.DONE
        if self.cache is not None and cls.cacheable:
            try:
                self.cache.store(key, cls.kind, workdir, outputs, keys)
            except OSError as err:
                self.bus.emit(NodeLog(node=node_id, level="warning",
                                      message=f"could not store the result in the cache: {err}"))
        self.bus.emit(NodeFinished(node=node_id, duration_s=time.perf_counter() - started, summary=_summary(outputs)))

    def _prepare(self, graph: Graph, checked: ValidationResult, node_id: str, out_dir: Path,
                 keys: dict[str, str], result: RunResult) -> tuple[type[Node], Node, dict[str, Any], str, Path] | None:
        """Gather a node's inputs and cache key; restore it and return None on a cache hit."""
        cls = checked.classes[node_id]
        params = checked.params[node_id]
        inputs: dict[str, Any] = {}
        input_keys: dict[str, list[str]] = {}
        for edge in graph.edges_into(node_id):
            if edge.src[0] not in result.outputs:
                continue  # a failed source feeding a `partial` input
            value = result.outputs[edge.src[0]][edge.src[1]]
            port = cls.inputs[edge.dst[1]]
            if port.multiple:
                inputs.setdefault(edge.dst[1], []).append(value)
            else:
                inputs[edge.dst[1]] = value
            input_keys.setdefault(edge.dst[1], []).append(f"{keys[edge.src[0]]}:{edge.src[1]}")
        for values in input_keys.values():
            values.sort()
        if getattr(cls, "wants_run_info", False):  # the run as the node shows it; it enters the key
            info = RunInfo.upstream_of(node_id, graph.name, checked.order(),
                                       {n: c.kind for n, c in checked.classes.items()},
                                       [(e.src[0], e.dst[0]) for e in graph.edges], result.states, result.errors)
            inputs["run_info"] = info
            input_keys["run_info"] = [info.key()]
        key = node_key(cls.kind, cls.version, params, input_keys, cls.path_params, memo=self.digests)
        if self.digests is not None:
            self.digests.save()
        if not cls.cacheable or self.cache is None:
            key = f"{key[:16]}{uuid.uuid4().hex[:16]}"  # unique: descendants must re-run too
        keys[node_id] = key
        workdir = out_dir / "nodes" / node_id
        node = cls(params)
        # the prefetch thread is done with this node's folder before anything here touches it
        copies = self.prefetch.take(node_id, key) if self.prefetch is not None else None

        if self.cache is not None and cls.cacheable and self.cache.lookup(key):
            try:
                key_folders = {k: n for n, k in keys.items() if n != node_id}
                key_folders[key] = node_id
                outputs = self.cache.restore(key, workdir, key_folders, copies)
                node.publish(out_dir, node_id, outputs)
                result.outputs[node_id] = outputs
                result.states[node_id] = NodeState.CACHED
                self.bus.emit(NodeCached(node=node_id, key=key, summary=_summary(outputs)))
                return None
            except CorruptEntry as err:
                self.cache.drop(key)
                self.bus.emit(NodeLog(node=node_id, level="warning",
                                      message=f"cache entry {key} is corrupt ({err}); dropped it and running again"))
            except Exception:  # noqa: BLE001 - an unreadable cache entry is just a miss
                pass
        return cls, node, inputs, key, workdir
