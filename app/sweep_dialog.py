"""Run ▸ Sweep…: choose params and their values, run every variant, get the sweep report.

The dialog builds the same grid `heiti sweep --grid NODE.PARAM=V1,V2` takes; the sweep runs on a
Python thread through the engine's SweepRunner, and its progress comes back as queued Qt signals.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heiti.engine.executor import Executor, default_cache_dir
from heiti.engine.graph import Graph
from heiti.engine.registry import Registry
from heiti.engine.sweep import SweepError, SweepRunner, default_sweep_dir, describe, parse_grid, variants
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)


@dataclass
class SweepSpec:
    grid: dict[str, list[Any]]
    combos: list[dict[str, Any]]
    out_dir: Path
    random_n: int | None
    max_latency_ms: float | None
    min_quality: float | None
    jobs: int
    interleave: bool = False


def _optional_float(text: str, name: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise SweepError(f"{name}: {text!r} is not a number") from None


class SweepDialog(QDialog):
    COLUMNS = ("node", "param", "values (comma-separated, JSON)")

    def __init__(self, graph: Graph, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sweep")
        self.graph = graph
        self.registry = registry
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.horizontalHeader().setStretchLastSection(True)
        add, remove = QPushButton("Add param"), QPushButton("Remove param")
        add.clicked.connect(lambda: self.add_row())
        remove.clicked.connect(self.remove_row)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)

        self.random_n = QSpinBox()
        self.random_n.setRange(0, 100_000)
        self.random_n.setSpecialValueText("all combinations")
        self.out_dir = QLineEdit(str(default_sweep_dir(graph)))
        self.max_latency = QLineEdit()
        self.max_latency.setPlaceholderText("no limit")
        self.min_quality = QLineEdit()
        self.min_quality.setPlaceholderText("no limit")
        self.jobs = QSpinBox()
        self.jobs.setRange(1, 256)
        self.jobs.setValue(os.cpu_count() or 1)
        self.jobs.setToolTip("nodes at once, each in its own process; measuring nodes always run alone")
        self.interleave = QCheckBox("runtimes take turns")
        self.interleave.setToolTip("runtimes ready together are timed in turns, block by block, so that a machine "
                                   "whose speed drifts (a shared VM) affects each alike; needs 2 or more jobs")
        form = QFormLayout()
        form.addRow("Random variants", self.random_n)
        form.addRow("Sweep folder", self.out_dir)
        form.addRow("Max mean latency (ms)", self.max_latency)
        form.addRow("Min accuracy / mAP", self.min_quality)
        form.addRow("Parallel jobs", self.jobs)
        form.addRow("", self.interleave)

        self.summary = QLabel()
        self.summary.setObjectName("SweepSummary")
        self.box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.box.button(QDialogButtonBox.StandardButton.Ok).setText("Run sweep")
        self.box.accepted.connect(self.accept)
        self.box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.box)
        self.random_n.valueChanged.connect(self.refresh)
        for field in (self.max_latency, self.min_quality, self.out_dir):
            field.textChanged.connect(self.refresh)
        self.resize(720, 460)
        self.refresh()

    # --- rows -------------------------------------------------------------------------------------
    def _params_of(self, node_id: str) -> list[str]:
        try:
            cls = self.registry.get(self.graph.node(node_id).kind)
        except (KeyError, Exception):  # noqa: BLE001 - unknown kind: no params to offer
            return []
        return list(cls.Params.model_fields)

    def add_row(self, node_id: str = "", param: str = "", values: str = "") -> int:
        row = self.table.rowCount()
        self.table.insertRow(row)
        nodes, params = QComboBox(), QComboBox()
        nodes.addItems([n.id for n in self.graph.nodes])
        text = QLineEdit(values)

        self.table.setCellWidget(row, 0, nodes)
        self.table.setCellWidget(row, 1, params)
        self.table.setCellWidget(row, 2, text)

        def fill_params() -> None:
            params.clear()
            params.addItems(self._params_of(nodes.currentText()))

        if node_id:
            nodes.setCurrentText(node_id)
        fill_params()
        if param:
            params.setCurrentText(param)
        nodes.currentTextChanged.connect(lambda _t: (fill_params(), self.refresh()))
        params.currentTextChanged.connect(lambda _t: self.refresh())
        text.textChanged.connect(lambda _t: self.refresh())
        self.refresh()
        return row

    def remove_row(self) -> None:
        row = self.table.currentRow() if self.table.currentRow() >= 0 else self.table.rowCount() - 1
        if row >= 0:
            self.table.removeRow(row)
            self.refresh()

    def grid_items(self) -> list[str]:
        items = []
        for row in range(self.table.rowCount()):
            node = self.table.cellWidget(row, 0).currentText()
            param = self.table.cellWidget(row, 1).currentText()
            values = self.table.cellWidget(row, 2).text()
            items.append(f"{node}.{param}={values}")
        return items

    # --- the spec -----------------------------------------------------------------------------------
    def spec(self) -> SweepSpec:
        """The sweep as chosen; raises SweepError with the reason when it cannot run."""
        items = self.grid_items()
        if not items:
            raise SweepError("add at least one param to vary")
        grid = parse_grid(items, self.graph)
        random_n = self.random_n.value() or None
        if not self.out_dir.text().strip():
            raise SweepError("choose a sweep folder")
        return SweepSpec(grid=grid, combos=variants(grid, random_n), out_dir=Path(self.out_dir.text().strip()),
                         random_n=random_n, jobs=self.jobs.value(), interleave=self.interleave.isChecked(),
                         max_latency_ms=_optional_float(self.max_latency.text(), "max latency"),
                         min_quality=_optional_float(self.min_quality.text(), "min accuracy"))

    def refresh(self) -> None:
        ok = self.box.button(QDialogButtonBox.StandardButton.Ok)
        try:
            spec = self.spec()
        except SweepError as err:
            self.summary.setText(str(err))
            ok.setEnabled(False)
            return
        self.summary.setText(f"{len(spec.combos)} variant(s), e.g. {describe(spec.combos[0])}")
        ok.setEnabled(True)


class SweepJob(QObject):
    """A sweep on a Python thread; signals arrive queued on the GUI thread."""

    variant_done = Signal(int, int, str)  # index, total, status
    finished = Signal(str, str)  # status, report path ("" when none)

    def __init__(self, spec: SweepSpec, graph: Graph, registry: Registry, cache_dir: Path | None = None,
                 use_cache: bool = True, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.graph = graph.copy_deep()
        self.runner = SweepRunner(lambda: Executor(registry, cache_dir=cache_dir or default_cache_dir(),
                                                   use_cache=use_cache, jobs=spec.jobs,
                                                   interleave=spec.interleave))
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="heiti-sweep", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        self.runner.cancel()

    def _work(self) -> None:
        from heiti.nodes.reports.sweep import write_sweep_report

        total = len(self.spec.combos)
        try:
            result = self.runner.run(self.graph, self.spec.combos, self.spec.out_dir,
                                     lambda rec: self.variant_done.emit(rec.index, total, rec.status))
            report = write_sweep_report(self.spec.out_dir, self.spec.max_latency_ms, self.spec.min_quality)
        except Exception as err:  # noqa: BLE001 - shown to the user, never lost on a thread
            self.finished.emit(f"error: {err}", "")
            return
        self.finished.emit(result.status, str(report.html))


def open_sweep_dialog(window: Any) -> SweepJob | None:
    """Ask for a sweep of the window's graph and start it; the job is kept on the window."""
    doc = window.doc
    checked = doc.validate_now()
    if not checked.ok:
        window.show_error("The graph is not valid", "\n".join(f"• {p}" for p in checked.problems if p.severity == "error"))
        return None
    dialog = SweepDialog(doc.graph, doc.registry, window)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    try:
        spec = dialog.spec()
    except SweepError as err:
        window.show_error("The sweep cannot run", str(err))
        return None
    job = SweepJob(spec, doc.graph, doc.registry, window.runs.cache_dir, window.runs.use_cache, window)
    bar = window.statusBar()
    job.variant_done.connect(lambda i, n, status: bar.showMessage(f"sweep: variant {i + 1}/{n} {status}"))
    job.variant_done.connect(lambda i, n, status: window.log_dock.add("", "run", f"sweep variant {i + 1}/{n}: {status}"))

    def done(status: str, report: str) -> None:
        message = f"sweep {status}" + (f" — report: {report}" if report else "")
        window.log_dock.add("", "run", message)
        bar.showMessage(message, 15000)

    job.finished.connect(done)
    window.sweep_job = job
    job.start()
    bar.showMessage(f"sweep: {len(spec.combos)} variant(s) into {spec.out_dir}…")
    return job
