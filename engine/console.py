"""Terminal view of a run: a live table (a line per node with state, progress and latest metric,
plus an overall bar) built from engine events, and a summary table at the end."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

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
from heiti.engine.states import NodeState, reduce
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    NodeState.PENDING: "dim", NodeState.RUNNING: "bold cyan", NodeState.DONE: "green", NodeState.CACHED: "blue",
    NodeState.FAILED: "bold red", NodeState.SKIPPED: "yellow", NodeState.CANCELLED: "magenta",
}


@dataclass
class NodeView:
    state: NodeState = NodeState.PENDING
    fraction: float = 0.0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    duration: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class RunView:
    """Collects events into per-node state; renders it with rich."""

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self.nodes: dict[str, NodeView] = {}
        self.states: dict[str, NodeState] = {}  # engine/states.py keeps it; the views show it
        self.finished: RunFinished | None = None
        self._lock = threading.Lock()
        self._live: Live | None = None

    # --- events ---------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        state = reduce(self.states, event)
        if isinstance(event, RunStarted):
            self.nodes = {n: NodeView() for n in event.order}
            return
        if isinstance(event, RunFinished):
            self.finished = event
            return
        view = self.nodes.setdefault(getattr(event, "node", "?"), NodeView())
        if state is not None:
            view.state = state
        if isinstance(event, NodeStarted):
            view.started = time.perf_counter()
        elif isinstance(event, NodeProgress):
            view.fraction, view.message = event.fraction, event.message or view.message
        elif isinstance(event, NodeMetric):
            view.metrics[event.name] = event.value
        elif isinstance(event, NodeFinished):
            view.fraction, view.duration, view.summary = 1.0, event.duration_s, event.summary
            view.message = ""
        elif isinstance(event, NodeCached):
            view.fraction, view.summary = 1.0, event.summary
        elif isinstance(event, NodeFailed):
            view.error = event.message
            if self._live is not None and view.state == NodeState.FAILED:
                self._live.console.print(f"[bold red]✗ {event.node}[/]: {event.message}")
                if self.verbose and event.traceback:
                    self._live.console.print(event.traceback)
        elif isinstance(event, NodeSkipped):
            view.message = event.reason
        elif isinstance(event, NodeLog):
            if self._live is not None and (self.verbose or event.level in ("warning", "error")):
                self._live.console.print(f"[dim]{event.node}[/] {event.level}: {event.message}")

    # --- rendering ------------------------------------------------------------------------------
    def __rich__(self) -> Group:
        with self._lock:
            table = Table(box=None, expand=False, show_header=False, pad_edge=False)
            table.add_column("node", style="bold", no_wrap=True)
            table.add_column("state", no_wrap=True)
            table.add_column("progress", width=24)
            table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
            total = len(self.nodes) or 1
            done = 0.0
            for node_id, view in self.nodes.items():
                done += 1.0 if view.state.over else view.fraction
                bar = ProgressBar(total=1.0, completed=view.fraction, width=22)
                detail = view.message
                if view.metrics:
                    detail = "  ".join(f"{k}={v:.4g}" for k, v in list(view.metrics.items())[-3:])
                elif view.error:
                    detail = view.error
                table.add_row(node_id, Text(view.state, style=STATE_STYLE.get(view.state, "")), bar, detail)
            overall = Table.grid(padding=1)
            overall.add_row(Text("overall", style="bold"), ProgressBar(total=1.0, completed=done / total, width=40),
                            Text(f"{int(100 * done / total)}%"))
            return Group(table, overall)

    def __enter__(self) -> RunView:
        self._live = Live(self, console=self.console, refresh_per_second=10, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def summary_table(self) -> Table:
        table = Table(title="run summary", show_lines=False)
        table.add_column("node")
        table.add_column("state")
        table.add_column("time", justify="right")
        table.add_column("result", overflow="fold")
        for node_id, view in self.nodes.items():
            when = f"{view.duration:.2f}s" if view.duration is not None else ""
            detail = view.error or ", ".join(f"{k}: {v}" for k, v in view.summary.items())
            table.add_row(node_id, Text(view.state, style=STATE_STYLE.get(view.state, "")), when, detail)
        return table


def measurements_table(out_dir: Any) -> Table | None:
    """Runtime comparison of a finished run (accuracy, latency, size), from measurements/*.json."""
    from pathlib import Path

    from heiti.engine.measurements import read_measurements

    files = sorted(Path(out_dir, "measurements").glob("*.json"))
    if not files:
        return None
    rows, warnings = [], []
    for path in files:
        try:
            data = read_measurements(path).data
        except (ValueError, OSError):
            continue
        warnings += [f"! {data.label or data.node or path.stem}: {w}" for w in data.warnings]
        quality = ""
        if data.classification is not None:
            quality = f"acc {data.classification.accuracy:.4f}"
        elif data.detection is not None:
            quality = f"mAP50 {data.detection.map50:.3f}"
        lat = data.latency_ms
        size = f"{data.model_size_bytes / 1024:.1f} KiB" if data.model_size_bytes else ""
        if data.model_size_bytes and data.model_gzip_bytes:  # compressed beside it: what clustering/pruning save
            size = f"{data.model_size_bytes / 1024:.1f} / {data.model_gzip_bytes / 1024:.1f} KiB"
        rows.append((lat.mean if lat else float("inf"), data.label or data.node or path.stem, data.runtime,
                     quality, f"{lat.mean:.3f}" if lat else "", f"{lat.p99:.3f}" if lat else "", size,
                     data.target.kind if data.target else ""))
    # what the report would flag beside the figures (a busy machine, drift, an untuned model), here too
    table = Table(title="runtimes, fastest first", caption="\n".join(warnings) or None, caption_justify="left")
    gzipped = any(" / " in row[6] for row in rows)
    columns = (("runtime node", "left"), ("framework", "left"), ("quality", "right"), ("mean ms", "right"),
               ("p99 ms", "right"), ("size / gzip" if gzipped else "model size", "right"), ("target", "left"))
    for i, (col, justify) in enumerate(columns):
        widest = max([len(col)] + [len(str(r[i + 1])) for r in rows])
        table.add_column(col, justify=justify, min_width=widest, no_wrap=True)  # type: ignore[arg-type]
    for row in sorted(rows, key=lambda r: r[0]):
        table.add_row(*row[1:])
    return table
