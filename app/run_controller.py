"""Run / Stop for the main window: starts the bridge and routes its signals to the canvas, the log,
the charts and the results dock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from heiti.app.bridge import RunBridge
from heiti.app.document import GraphDocument
from heiti.engine.executor import default_cache_dir, default_out_dir
from heiti.engine.states import NodeState
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QStatusBar


class MainWindow(Protocol):
    """What Run / Stop needs of the main window (app/mainwindow.py's MainWindow, which owns this
    object: naming it here keeps the import one way)."""

    doc: GraphDocument
    scene: Any  # GraphScene: set_node_state, reset_states
    charts: Any  # ChartsDock: add_metrics, clear, fill_from_run
    log_dock: Any  # LogDock: add
    results: Any  # ResultsDock: load
    results_dock: Any

    def show_error(self, title: str, text: str) -> None: ...
    def show_dock(self, dock: Any) -> None: ...
    def statusBar(self) -> QStatusBar: ...  # noqa: N802 - Qt's name



class RunController(QObject):
    #: emitted when a finished run left a report.html: the path
    report_ready = Signal(str)
    state_changed = Signal(bool)  # running?

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)  # type: ignore[arg-type] - the window is a QObject
        self.window = window
        self.bridge = RunBridge(window.doc.registry, self)
        self.runs_dir = Path("runs")
        self.cache_dir: Path | None = None
        self.use_cache = True
        self.parallel = True  # worker processes, as `heiti run` (--jobs = the core count)
        self.interleave = False  # runtimes take turns (--interleave)
        self.last_status: str | None = None
        self.last_out_dir: Path | None = None
        b = self.bridge
        b.run_started.connect(self._started)
        b.node_state.connect(self._node_state)
        b.node_progress.connect(self._progress)
        b.node_log.connect(lambda node, level, msg: window.log_dock.add(node, level, msg))
        b.metrics.connect(window.charts.add_metrics)
        b.run_finished.connect(self._finished)
        b.run_error.connect(self._error)
        b.stopped.connect(lambda: self.state_changed.emit(False))

    @property
    def running(self) -> bool:
        return self.bridge.running

    def run(self) -> bool:
        """Validate, then start a run on the worker thread; False when nothing was started."""
        if self.running:
            return False
        doc = self.window.doc
        result = doc.validate_now()
        if not result.ok:
            problems = "\n".join(f"• {p}" for p in result.problems if p.severity == "error")
            self.window.show_error("The graph is not valid", problems)
            return False
        if not doc.graph.nodes:
            self.window.statusBar().showMessage("nothing to run: add nodes first", 5000)
            return False
        out_dir = default_out_dir(doc.graph, self.runs_dir)
        self.window.scene.reset_states()
        self.window.charts.clear()
        self.window.log_dock.add("", "run", f"run started → {out_dir}")
        jobs = (os.cpu_count() or 1) if self.parallel else 1  # as `heiti run` without --jobs
        self.bridge.start(doc.graph, out_dir, cache_dir=self.cache_dir or default_cache_dir(), use_cache=self.use_cache,
                          jobs=jobs, interleave=self.interleave and jobs > 1)
        self.state_changed.emit(True)
        return True

    def stop(self) -> None:
        if self.running:
            self.bridge.stop()
            self.window.statusBar().showMessage("stopping…")

    # --- bridge signals -------------------------------------------------------------------------
    def _started(self, order: list[str], out_dir: str) -> None:
        for node_id in order:
            self.window.scene.set_node_state(node_id, NodeState.PENDING, 0.0, "")
        self.window.statusBar().showMessage(f"running {len(order)} nodes…")

    def _node_state(self, node_id: str, state: str, text: str) -> None:
        self.window.scene.set_node_state(node_id, state, 1.0 if state == NodeState.DONE else None, text)

    def _progress(self, node_id: str, fraction: float, message: str) -> None:
        self.window.scene.set_node_state(node_id, NodeState.RUNNING, fraction, message)

    def _finished(self, status: str, out_dir: str, seconds: float) -> None:
        self.last_status = status
        self.last_out_dir = Path(out_dir)
        self.window.log_dock.add("", "run", f"run {status} in {seconds:.1f} s — {out_dir}")
        self.window.statusBar().showMessage(f"run {status} in {seconds:.1f} s — results in {out_dir}", 15000)
        self.window.charts.fill_from_run(Path(out_dir))  # cached nodes sent no live samples
        found = self.window.results.load(Path(out_dir))
        report = Path(out_dir) / "report.html"
        if found:
            self.window.show_dock(self.window.results_dock)
        if report.exists():
            self.report_ready.emit(str(report))

    def _error(self, message: str) -> None:
        self.window.log_dock.add("", "error", message)
        self.window.show_error("The run could not start", message)
