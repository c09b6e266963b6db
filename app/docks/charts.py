"""Live charts of metric events: latency, CPU and memory per runtime node, training loss/accuracy.

Samples are stored as they arrive; curves are redrawn by a timer at most 20 times a second, and
only when something changed. A remote device's own figures (source != "host") replace the host's
for the same node and metric.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from heiti.engine.events import NodeMetric
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

REDRAW_MS = 50  # ~20 Hz
MAX_SAMPLES = 200_000
SYMBOLS_BELOW = 30
PLOTS = [  # key, title, unit, x axis
    ("latency", "Latency per inference", "ms", "inference"),
    ("cpu", "CPU", "%", "s"),
    ("memory", "Memory (RSS)", "MB", "s"),
    ("loss", "Training loss", "", "epoch"),
    ("accuracy", "Training accuracy", "", "epoch"),
    ("other", "Other metrics", "", ""),
]
CURVE_COLOURS = ["#4f8ef7", "#f29d38", "#46c46e", "#e5484d", "#b36bd4", "#2fb5b5", "#d6b94a", "#e86fb0",
                 "#8bd346", "#9aa7ff"]


#: the main metric of each plot; others on the same plot carry their name in the legend
MAIN_METRICS = {"latency_ms", "cpu_percent", "rss_mb"}
#: numbers a device sends with its stats that are not series (its clock)
IGNORED = {"t"}


def plot_for(metric: str) -> str:
    name = metric.lower()
    if "latency" in name:
        return "latency"
    if "cpu" in name:
        return "cpu"
    if "rss" in name or name.endswith("_mb"):
        return "memory"
    if "loss" in name:
        return "loss"
    if "acc" in name:
        return "accuracy"
    return "other"


@dataclass
class Series:
    node: str
    metric: str
    source: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    dirty: bool = True

    @property
    def label(self) -> str:
        text = self.node if self.metric in MAIN_METRICS else f"{self.node} {self.metric}"
        return text + (f" @ {self.source}" if self.source != "host" else "")

    @property
    def plot(self) -> str:
        return plot_for(self.metric)


class ChartsDock(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True, background="#1e2127", foreground="#c5ccd6")
        self.series: dict[tuple[str, str, str], Series] = {}
        self.curves: dict[tuple[str, str, str], pg.PlotDataItem] = {}
        self.paused = False
        self.redraws = 0
        self._node_colours: dict[str, str] = {}

        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.window = QSpinBox()
        self.window.setRange(50, MAX_SAMPLES)
        self.window.setValue(600)
        self.window.setSuffix(" samples")
        self.window.setToolTip("How many of the latest samples each curve shows")
        clear = QPushButton("Clear")
        png = QPushButton("Export PNG…")
        csv_button = QPushButton("Export CSV…")
        self.status = QLabel("No data yet: run the graph.")
        bar = QHBoxLayout()
        for w in (self.pause_button, QLabel("Window:"), self.window, clear, png, csv_button):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.status)

        self.plots_widget = QWidget()
        grid = QGridLayout(self.plots_widget)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        self.plots: dict[str, pg.PlotWidget] = {}
        for i, (key, title, unit, x_unit) in enumerate(PLOTS):
            plot = pg.PlotWidget(title=title)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setLabel("left", unit)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # "ms (x0.001)" reads badly
            if x_unit:
                plot.setLabel("bottom", x_unit)
            plot.addLegend(offset=(-5, 5), labelTextSize="8pt", brush=pg.mkBrush(30, 33, 39, 200))
            plot.setMinimumHeight(120)
            plot.setVisible(key in ("latency", "cpu", "memory"))
            grid.addWidget(plot, i // 3, i % 3)
            self.plots[key] = plot
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.plots_widget, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        self.pause_button.toggled.connect(self.set_paused)
        self.window.valueChanged.connect(lambda _: self._mark_all_dirty())
        clear.clicked.connect(self.clear)
        png.clicked.connect(lambda: self._ask_export("PNG image (*.png)", self.export_png))
        csv_button.clicked.connect(lambda: self._ask_export("CSV table (*.csv)", self.export_csv))

    # --- data -----------------------------------------------------------------------------------
    def add_metrics(self, events: list[NodeMetric]) -> None:
        for event in events:
            if event.name in IGNORED:
                continue
            key = (event.node, event.name, event.source)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = Series(event.node, event.name, event.source)
            series.x.append(event.x)
            series.y.append(event.value)
            if len(series.x) > MAX_SAMPLES:
                del series.x[: MAX_SAMPLES // 2]
                del series.y[: MAX_SAMPLES // 2]
            series.dirty = True

    def clear(self) -> None:
        for plot in self.plots.values():
            plot.clear()
        self.series.clear()
        self.curves.clear()
        self.status.setText("No data yet: run the graph.")

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")

    def _mark_all_dirty(self) -> None:
        for series in self.series.values():
            series.dirty = True

    def _hidden_by_device(self, series: Series) -> bool:
        """A host series is hidden when the device reports the same metric for the same node."""
        return series.source == "host" and any(
            s.node == series.node and s.metric == series.metric and s.source != "host" for s in self.series.values())

    def _colour(self, node: str) -> str:
        if node not in self._node_colours:
            self._node_colours[node] = CURVE_COLOURS[len(self._node_colours) % len(CURVE_COLOURS)]
        return self._node_colours[node]

    def redraw(self) -> None:
        """Update the curves whose data changed; called by the 20 Hz timer."""
        if self.paused:
            return
        window = self.window.value()
        changed = False
        for key, series in self.series.items():
            if not series.dirty:
                continue
            series.dirty = False
            changed = True
            curve = self.curves.get(key)
            if self._hidden_by_device(series):
                if curve is not None:
                    curve.setVisible(False)
                continue
            if curve is None:
                plot = self.plots[series.plot]
                plot.setVisible(True)
                pen = pg.mkPen(self._colour(series.node), width=1.0)
                if series.metric.startswith("val") or series.source != "host":
                    pen.setStyle(Qt.PenStyle.DashLine)
                curve = plot.plot(name=series.label, pen=pen)
                self.curves[key] = curve
            xs = np.asarray(series.x[-window:], dtype=float)
            ys = np.asarray(series.y[-window:], dtype=float)
            sparse = len(xs) < SYMBOLS_BELOW  # a line needs two points; show the samples themselves
            colour = self._colour(series.node)
            curve.setData(xs, ys, symbol="o" if sparse else None, symbolSize=5, symbolBrush=colour,
                          symbolPen=colour)
        if changed:
            self.redraws += 1
            total = sum(len(s.x) for s in self.series.values())
            self.status.setText(f"{len(self.series)} series, {total} samples")

    def visible_series(self) -> list[Series]:
        return [s for s in self.series.values() if not self._hidden_by_device(s)]

    # --- export ---------------------------------------------------------------------------------
    def _ask_export(self, filter_text: str, action) -> None:  # noqa: ANN001
        path, _ = QFileDialog.getSaveFileName(self, "Export charts", "", filter_text)
        if path:
            action(Path(path))

    def export_png(self, path: Path) -> None:
        self.redraw()
        self.plots_widget.grab().save(str(path), "PNG")

    def export_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["node", "metric", "source", "x", "value"])
            for series in self.series.values():
                for x, y in zip(series.x, series.y, strict=True):
                    writer.writerow([series.node, series.metric, series.source, x, y])
