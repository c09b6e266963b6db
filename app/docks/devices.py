"""The Devices dock: live CPU, memory, temperature and frequency of this machine and of every device
the graph targets (its target.tcp and target.serial nodes), without running the graph.

Each target is watched by a QThread iterating `heiti.nodes.devices.monitor.samples` — the same
source as `heiti monitor` — so a slow or dead device never blocks the window; samples reach the
GUI thread through queued signals. The table doubles as the plots' legend (its colour swatches),
so no legend ever covers a curve. Watching opens links to devices: it starts on request only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from heiti.engine.payloads import TargetHandle
from PySide6.QtCore import QThread, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLOURS = ["#4f8ef7", "#f29d38", "#46c46e", "#e5484d", "#b36bd4", "#2fb5b5", "#d6b94a", "#e86fb0"]
#: key, plot title, unit
QUANTITIES = [("cpu_percent", "CPU", "%"), ("mem_percent", "Memory", "%"), ("temp_c", "Temperature", "°C"),
              ("freq_mhz", "CPU frequency", "MHz")]
COLUMNS = ["Target", "Address", "Status", "CPU %", "Memory %", "Temp °C", "Freq MHz"]
KEEP = 600  # samples per target and quantity
RETRY_S = 3.0
REDRAW_MS = 200


def graph_targets(graph: Any) -> list[tuple[str, str, TargetHandle]]:
    """(key, label, target): this machine, then every target.tcp / target.serial node of the graph."""
    found = [("local", "this machine", TargetHandle(kind="local", address="local"))]
    for node in getattr(graph, "nodes", []):
        params = dict(node.params or {})
        options = {"timeout_s": float(params.get("timeout_s", 5.0)), "token": params.get("token", "")}
        if node.kind == "target.tcp":
            found.append((node.id, node.id, TargetHandle(kind="tcp", address=str(params.get("address", "127.0.0.1:7070")),
                                                         options=options)))
        elif node.kind == "target.serial":
            found.append((node.id, node.id, TargetHandle(
                kind="serial", address=str(params.get("port", "/dev/ttyUSB0")),
                options={**options, "baud": int(params.get("baud", 115200))})))
    return found


def _same(a: list[tuple[str, str, TargetHandle]], b: list[tuple[str, str, TargetHandle]]) -> bool:
    def ids(targets: list[tuple[str, str, TargetHandle]]) -> list[tuple[Any, ...]]:
        return [(key, t.kind, t.address, sorted(t.options.items())) for key, _, t in targets]

    return ids(a) == ids(b)


class _Watcher(QThread):
    """Streams one target's samples; reconnects every few seconds after a failure."""

    sample = Signal(str, dict)
    status = Signal(str, str)

    def __init__(self, key: str, target: TargetHandle, period_s: float) -> None:
        super().__init__()
        self.key, self.target, self.period_s = key, target, period_s
        self._stop = threading.Event()

    def run(self) -> None:
        from heiti.nodes.devices.monitor import MonitorError, samples

        while not self._stop.is_set():
            self.status.emit(self.key, "connecting…")
            info: dict[str, Any] = {}
            first = True
            try:
                for sample in samples(self.target, self.period_s, self._stop, info):
                    if first:
                        first = False
                        self.status.emit(self.key, str(info.get("hostname") or "watching"))
                    self.sample.emit(self.key, sample)
            except MonitorError as err:
                self.status.emit(self.key, f"{err}; retrying")
            except Exception as err:  # noqa: BLE001 - one target's trouble must not reach the window
                self.status.emit(self.key, f"{type(err).__name__}: {err}; retrying")
            self._stop.wait(RETRY_S)
        self.status.emit(self.key, "stopped")

    def stop(self) -> None:
        self._stop.set()


class DevicesDock(QWidget):
    watching_changed = Signal(bool)

    def __init__(self, graph_source: Callable[[], Any] | None = None, parent: QWidget | None = None,
                 period_s: float = 0.5) -> None:
        super().__init__(parent)
        self.graph_source = graph_source or (lambda: None)
        self.period_s = period_s
        self.targets: list[tuple[str, str, TargetHandle]] = []
        self.watchers: dict[str, _Watcher] = {}
        self.history: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, str] = {}
        self._dirty = False
        self._t0 = time.monotonic()

        self.watch_button = QPushButton("Watch")
        self.watch_button.setCheckable(True)
        self.watch_button.setToolTip("Connect to this machine and the graph's devices and show their figures live")
        refresh = QPushButton("Refresh targets")
        refresh.setToolTip("Read the graph's target.tcp and target.serial nodes again")
        self.info = QLabel("Press Watch to see this machine and the graph's devices live.")
        bar = QHBoxLayout()
        for widget in (self.watch_button, refresh):
            bar.addWidget(widget)
        bar.addWidget(self.info, 1)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)

        plots = QWidget()
        row = QHBoxLayout(plots)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.plots: dict[str, pg.PlotWidget] = {}
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        for key, title, unit in QUANTITIES:
            plot = pg.PlotWidget(title=f"{title} ({unit})")
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setLabel("bottom", "s")
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
            plot.setMinimumHeight(110)
            row.addWidget(plot)
            self.plots[key] = plot
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.table)
        layout.addWidget(plots, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.watch_button.toggled.connect(self.set_watching)
        refresh.clicked.connect(self.refresh_targets)
        self.refresh_targets()

    # --- targets ----------------------------------------------------------------------------------
    @property
    def watching(self) -> bool:
        return bool(self.watchers)

    def refresh_targets(self) -> None:
        """Read the targets from the graph; while watching, watch the new set."""
        targets = graph_targets(self.graph_source())
        if self.targets and _same(targets, self.targets):
            return  # an edit elsewhere in the graph: keep the links
        was_watching = self.watching
        if was_watching:
            self.stop()
        self.targets = targets
        self.table.setRowCount(len(self.targets))
        for r, (key, label, target) in enumerate(self.targets):
            name = QTableWidgetItem(f"■ {label}")
            name.setForeground(QColor(self._colour(r)))
            address = target.address if target.kind != "serial" else \
                f"{target.address} @ {target.options.get('baud')}"
            self.table.setItem(r, 0, name)
            self.table.setItem(r, 1, QTableWidgetItem(address if target.kind != "local" else "local"))
            for c in range(2, len(COLUMNS)):
                self.table.setItem(r, c, QTableWidgetItem(self.statuses.get(key, "—") if c == 2 else "—"))
        self._fit_table()
        if was_watching:
            self.set_watching(True)

    def _fit_table(self) -> None:
        """Every target's row in view (up to six), the plots taking the rest of the height."""
        self.table.resizeColumnsToContents()
        rows = min(self.table.rowCount(), 6)
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth() + 2
        height += sum(self.table.rowHeight(r) for r in range(rows))
        self.table.setFixedHeight(height)

    def _colour(self, row: int) -> str:
        return COLOURS[row % len(COLOURS)]

    def _row(self, key: str) -> int:
        return next((r for r, (k, _, _) in enumerate(self.targets) if k == key), -1)

    # --- watching ---------------------------------------------------------------------------------
    def set_watching(self, on: bool) -> None:
        if on and not self.watching:
            for key, _, target in self.targets:
                watcher = _Watcher(key, target, self.period_s)
                watcher.sample.connect(self._on_sample)
                watcher.status.connect(self._on_status)
                self.watchers[key] = watcher
                watcher.start()
            self._t0 = time.monotonic()
            self.timer.start()
            self.info.setText(f"watching {len(self.targets)} target(s)")
        elif not on and self.watching:
            self.stop()
            self.info.setText("stopped")
        if self.watch_button.isChecked() != on:
            self.watch_button.blockSignals(True)
            self.watch_button.setChecked(on)
            self.watch_button.blockSignals(False)
        self.watch_button.setText("Stop" if on else "Watch")
        self.watching_changed.emit(on)

    def stop(self, wait_ms: int = 10_000) -> None:
        """Stop every watcher and wait for its thread (call before the window closes)."""
        watchers, self.watchers = dict(self.watchers), {}
        for watcher in watchers.values():
            watcher.stop()
        for watcher in watchers.values():
            watcher.wait(wait_ms)
        self.timer.stop()

    def _on_status(self, key: str, text: str) -> None:
        self.statuses[key] = text
        row = self._row(key)
        if row >= 0:
            self.table.setItem(row, 2, QTableWidgetItem(text))
            self.table.item(row, 2).setToolTip(text)

    def _on_sample(self, key: str, sample: dict) -> None:
        from heiti.nodes.devices.monitor import value_text

        self.latest[key] = sample
        store = self.history.setdefault(key, {})
        t = time.monotonic() - self._t0  # one clock for every target: seconds since Watch was pressed
        for quantity, _, _ in QUANTITIES:
            value = sample.get(quantity)
            if isinstance(value, int | float) and not isinstance(value, bool):
                xs, ys = store.setdefault(quantity, ([], []))
                xs.append(t)
                ys.append(float(value))
                if len(xs) > KEEP:
                    del xs[: len(xs) - KEEP]
                    del ys[: len(ys) - KEEP]
        row = self._row(key)
        if row >= 0:
            for c, (quantity, _, unit) in enumerate(QUANTITIES, start=3):
                self.table.setItem(row, c, QTableWidgetItem(value_text(sample, quantity, unit)))
        self._dirty = True

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.table.resizeColumnsToContents()
        for r, (key, _, _) in enumerate(self.targets):
            for quantity, _, _ in QUANTITIES:
                xs, ys = self.history.get(key, {}).get(quantity, ([], []))
                if not xs:
                    continue
                curve = self.curves.get((key, quantity))
                if curve is None:
                    curve = self.plots[quantity].plot(pen=pg.mkPen(self._colour(r), width=1.2))
                    self.curves[(key, quantity)] = curve
                few = len(xs) < 30
                curve.setData(np.asarray(xs), np.asarray(ys), symbol="o" if few else None, symbolSize=4,
                              symbolBrush=self._colour(r), symbolPen=self._colour(r))
        for quantity, title, unit in QUANTITIES:
            has = any((key, quantity) in self.curves for key, _, _ in self.targets)
            self.plots[quantity].setTitle(f"{title} ({unit})" if has else f"{title}: n/a")
