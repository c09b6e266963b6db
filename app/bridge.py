"""The run bridge: the engine's Executor on a worker QThread, its events re-emitted as Qt signals.

Engine events arrive on the worker thread; a relay object forwards them to the GUI thread through
queued connections, so slots run on the GUI thread and the window never blocks. Metric samples can
come by the thousand per second, so they are batched and delivered at most ~20 times a second.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from pathlib import Path

from heiti.engine.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeLog,
    NodeMetric,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from heiti.engine.executor import Executor, InvalidGraph
from heiti.engine.graph import Graph
from heiti.engine.registry import Registry
from heiti.engine.states import NodeState, reduce
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal

METRIC_FLUSH_MS = 50


def _summary_text(summary: dict) -> str:
    return (" — " + ", ".join(f"{k}: {v}" for k, v in summary.items())) if summary else ""


class _Relay(QObject):
    event = Signal(object)
    failed = Signal(str)


class _RunThread(QThread):
    def __init__(self, executor: Executor, graph: Graph, out_dir: Path, relay: _Relay) -> None:
        super().__init__()
        self.executor = executor
        self.graph = graph
        self.out_dir = out_dir
        self.relay = relay

    def run(self) -> None:
        try:
            self.executor.run(self.graph, self.out_dir)
        except InvalidGraph as err:
            self.relay.failed.emit("the graph is not valid:\n" + "\n".join(str(p) for p in err.result.problems))
        except Exception as err:  # noqa: BLE001 - shown to the user, the editor keeps running
            self.relay.failed.emit(f"{type(err).__name__}: {err}\n{traceback.format_exc()}")


class RunBridge(QObject):
    run_started = Signal(list, str)            # node order, out dir
    node_state = Signal(str, str, str)         # node, state, text
    node_progress = Signal(str, float, str)    # node, fraction, message
    node_log = Signal(str, str, str)           # node, level, message
    metrics = Signal(list)                     # [NodeMetric, ...] batched
    run_finished = Signal(str, str, float)     # status, out dir, seconds
    run_error = Signal(str)                    # could not run at all
    event = Signal(object)                     # every engine event, for whoever wants them all
    stopped = Signal()                         # the worker thread has ended

    def __init__(self, registry: Registry, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self._relay = _Relay()
        self._relay.event.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._relay.failed.connect(self._failed, Qt.ConnectionType.QueuedConnection)
        self._metric_lock = threading.Lock()
        self._pending_metrics: deque[NodeMetric] = deque()
        self._flush = QTimer(self)
        self._flush.setInterval(METRIC_FLUSH_MS)
        self._flush.timeout.connect(self.flush_metrics)
        self._thread: _RunThread | None = None
        self.executor: Executor | None = None
        self.out_dir: Path | None = None
        #: node id -> state of the current (or last) run, reduced from its events by the engine's rules
        self.states: dict[str, NodeState] = {}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def start(self, graph: Graph, out_dir: Path, cache_dir: Path | None = None, use_cache: bool = True,
              jobs: int = 1, interleave: bool = False) -> None:
        if self.running:
            raise RuntimeError("a run is in progress")
        self.executor = Executor(self.registry, cache_dir=cache_dir, use_cache=use_cache, jobs=jobs,
                                 interleave=interleave)
        self.executor.subscribe(self._on_engine_event)
        self.out_dir = Path(out_dir)
        self._thread = _RunThread(self.executor, graph.copy_deep(), self.out_dir, self._relay)
        self._thread.finished.connect(self._thread_done)
        self._flush.start()
        self._thread.start()

    def stop(self) -> None:
        """Ask the engine to stop: between nodes, and inside nodes that check `ctx.cancelled`."""
        if self.executor is not None:
            self.executor.cancel()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms) if self._thread is not None else True

    # --- worker thread side ---------------------------------------------------------------------
    def _on_engine_event(self, event: Event) -> None:
        if isinstance(event, NodeMetric):
            with self._metric_lock:
                self._pending_metrics.append(event)
        else:
            self._relay.event.emit(event)

    # --- GUI thread side ------------------------------------------------------------------------
    def flush_metrics(self) -> None:
        with self._metric_lock:
            batch = list(self._pending_metrics)
            self._pending_metrics.clear()
        if batch:
            self.metrics.emit(batch)

    def _dispatch(self, event: Event) -> None:
        self.event.emit(event)
        state = reduce(self.states, event)
        if isinstance(event, RunStarted):
            self.run_started.emit(list(event.order), event.out_dir)
        elif isinstance(event, NodeStarted):
            self.node_state.emit(event.node, state, "")
            self.node_log.emit(event.node, "info", f"started ({event.kind})")
        elif isinstance(event, NodeProgress):
            self.node_progress.emit(event.node, event.fraction, event.message)
        elif isinstance(event, NodeLog):
            self.node_log.emit(event.node, event.level, event.message)
        elif isinstance(event, NodeFinished):
            self.node_state.emit(event.node, state, f"{event.duration_s:.2f} s")
            self.node_log.emit(event.node, "info", f"done in {event.duration_s:.2f} s" + _summary_text(event.summary))
        elif isinstance(event, NodeCached):
            self.node_state.emit(event.node, state, "from cache")
            self.node_log.emit(event.node, "info", "taken from the cache" + _summary_text(event.summary))
        elif isinstance(event, NodeFailed):
            self.node_state.emit(event.node, state, event.message)
            text = f"{event.error_type}: {event.message}" + (f"\n{event.traceback}" if event.traceback else "")
            self.node_log.emit(event.node, "error", text)
        elif isinstance(event, NodeSkipped):
            self.node_state.emit(event.node, state, event.reason)
            self.node_log.emit(event.node, "warning", f"skipped: {event.reason}")
        elif isinstance(event, RunFinished):
            self.flush_metrics()
            self.run_finished.emit(event.status, event.out_dir, event.duration_s)

    def _failed(self, message: str) -> None:
        self.run_error.emit(message)

    def _thread_done(self) -> None:
        self._flush.stop()
        self.flush_metrics()
        self.stopped.emit()
