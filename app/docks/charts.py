"""Live charts of metric events: latency, CPU, memory, temperature, CPU frequency and GPU per
runtime node, training loss/accuracy.

Samples are stored as they arrive; curves are redrawn by a timer at most 20 times a second, and
only when something changed. A remote device's own figures (source != "host") replace the host's
for the same node and metric. Nodes taken from the cache send no events: after a run their
series are filled from the stored measurements files. Each plot's legend is a line of text under
it, so that it never covers the data.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from heiti.engine.events import NodeMetric
from heiti.engine.measurements import MeasurementsFile
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
    ("latency", "Latency per inference", "ms", "call"),
    ("cpu", "CPU", "%", "s"),
    ("memory", "Memory (RSS)", "MB", "s"),
    ("temp", "CPU temperature", "°C", "s"),
    ("freq", "CPU frequency", "MHz", "s"),
    ("gpu", "GPU utilisation", "%", "s"),
    ("gpu_mem", "GPU memory", "MB", "s"),
    ("loss", "Training loss", "", "epoch"),
    ("accuracy", "Training accuracy", "", "epoch"),
    ("other", "Other metrics", "", ""),
]
CURVE_COLOURS = ["#4f8ef7", "#f29d38", "#46c46e", "#e5484d", "#b36bd4", "#2fb5b5", "#d6b94a", "#e86fb0",
                 "#8bd346", "#9aa7ff"]


#: the main metric of each plot; others on the same plot carry their name in the legend
MAIN_METRICS = {"latency_ms", "cpu_percent", "rss_mb", "temp_c", "freq_mhz", "gpu_percent", "gpu_mem_mb"}
#: stored resource series that were never streamed live (per core, the process's own CPU)
NOT_CHARTED = ("_core", "process_cpu_percent")
#: numbers a device sends with its stats that are not series (its clock)
IGNORED = {"t"}


def plot_for(metric: str) -> str:
    name = metric.lower()
    if name.startswith("gpu"):
        return "gpu_mem" if "mem" in name else "gpu"
    if name.startswith("temp"):
        return "temp"
    if name.startswith("freq"):
        return "freq"
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


def _kept_calls(data: MeasurementsFile) -> list[int]:
    """The call index of each stored latency: a long run keeps one call per stretch of calls
    (latencies_ms plus latency_count), so plotting them at 0..N would squeeze the x axis."""
    from heiti.nodes.runtimes.measure import thinned_calls

    kept = len(data.latencies_ms)
    count = data.latency_count or kept  # older files: every call is there
    return thinned_calls(max(count, kept), kept).tolist() if kept else []


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
        self._grid = QGridLayout(self.plots_widget)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(4)
        self.plots: dict[str, pg.PlotWidget] = {}
        #: each plot's legend: a line of text under it, never over the curves
        self.legends: dict[str, QLabel] = {}
        self._cells: dict[str, QWidget] = {}
        for key, title, unit, x_unit in PLOTS:
            plot = pg.PlotWidget(title=title)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setLabel("left", unit)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # "ms (x0.001)" reads badly
            if x_unit:
                plot.setLabel("bottom", x_unit)
            plot.setMinimumHeight(120)
            legend = QLabel()
            legend.setWordWrap(True)
            legend.setTextFormat(Qt.TextFormat.RichText)
            legend.setStyleSheet("font-size: 8pt;")
            cell = QWidget(self.plots_widget)  # a parent, so that showing it never makes a window of it
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(0)
            box.addWidget(plot, 1)
            box.addWidget(legend)
            cell.setVisible(key in ("latency", "cpu", "memory"))
            self.plots[key] = plot
            self.legends[key] = legend
            self._cells[key] = cell
        self._layout_plots()
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

    def _layout_plots(self) -> None:
        """The visible plots in reading order, three to a row, with no holes for hidden ones."""
        for cell in self._cells.values():
            self._grid.removeWidget(cell)
        shown = [key for key, *_ in PLOTS if not self._cells[key].isHidden()]
        for i, key in enumerate(shown):
            self._grid.addWidget(self._cells[key], i // 3, i % 3)
        self._grid.activate()  # place them now: a hidden dock would otherwise keep stale geometry

    def _show_plot(self, key: str) -> None:
        if self._cells[key].isHidden():
            self._cells[key].setVisible(True)
            self._layout_plots()

    def _update_legend(self, key: str) -> None:
        entries = []
        for series_key, curve in self.curves.items():
            series = self.series[series_key]
            if series.plot != key or not curve.isVisible():
                continue
            dashed = series.metric.startswith("val") or series.source != "host"
            entries.append(f"<span style='color:{self._colour(series.node)}'>{'╍╍' if dashed else '━━'}</span>"
                           f"&nbsp;{html.escape(series.label)}")
        self.legends[key].setText("&nbsp;&nbsp; ".join(entries))

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

    def fill_from_run(self, out_dir: Path) -> list[str]:
        """Series of the nodes that sent nothing live (taken from the cache) from their stored
        measurements (`<out_dir>/measurements/<node>.json`); returns the nodes filled."""
        from heiti.engine.measurements import read_measurements

        live = {s.node for s in self.series.values()}
        filled = []
        for path in sorted((Path(out_dir) / "measurements").glob("*.json")):
            try:
                data = read_measurements(path).data
            except Exception:  # noqa: BLE001 - an unreadable file is the results dock's to report
                continue
            node = data.node or path.stem
            if node in live:
                continue
            events = [NodeMetric(node=node, name="latency_ms", value=v, x=float(call))
                      for call, v in zip(_kept_calls(data), data.latencies_ms, strict=True)]
            for ts in data.resources:
                if any(part in ts.name for part in NOT_CHARTED) or len(ts.t) != len(ts.values):
                    continue
                events += [NodeMetric(node=node, name=ts.name, value=v, x=t, source=ts.source or "host")
                           for t, v in zip(ts.t, ts.values, strict=True)]
            if events:
                self.add_metrics(events)
                filled.append(node)
        if filled:
            self.redraw()
            self.status.setText(self.status.text() + f" — {len(filled)} from stored measurements (cached)")
        return filled

    def clear(self) -> None:
        for plot in self.plots.values():
            plot.clear()
        for legend in self.legends.values():
            legend.clear()
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
                    self._update_legend(series.plot)
                continue
            if curve is None:
                plot = self.plots[series.plot]
                self._show_plot(series.plot)
                pen = pg.mkPen(self._colour(series.node), width=1.0)
                if series.metric.startswith("val") or series.source != "host":
                    pen.setStyle(Qt.PenStyle.DashLine)
                curve = plot.plot(name=series.label, pen=pen)
                self.curves[key] = curve
                self._update_legend(series.plot)
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
