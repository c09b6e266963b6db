"""The comparison table: one row per runtime from `<out>/measurements/*.json`, and the report link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heiti.engine.measurements import read_measurements
from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ["Runtime", "Node", "Target", "Format", "Size (MB)", "Mean (ms)", "p90 (ms)", "p99 (ms)",
           "Throughput (/s)", "Accuracy", "Top-5", "mAP@0.5", "Missing"]


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def measurement_rows(out_dir: Path) -> list[list[str]]:
    """One row of text per measurements file, in file-name order; unreadable files say so."""
    rows = []
    for path in sorted((Path(out_dir) / "measurements").glob("*.json")):
        try:
            read = read_measurements(path)
        except Exception as err:  # noqa: BLE001 - one bad file must not hide the others
            rows.append([path.stem, path.stem, "", "", "", "", "", "", "", "", "", "", f"unreadable: {err}"])
            continue
        m = read.data
        lat = m.latency_ms
        cls, det = m.classification, m.detection
        rows.append([
            m.label or m.runtime or path.stem,
            m.node or path.stem,
            m.target.kind + (f" {m.target.address}" if m.target.address else ""),
            m.model_format,
            _num(m.model_size_bytes / 1e6, 2) if m.model_size_bytes is not None else "—",
            _num(lat.mean if lat else None), _num(lat.p90 if lat else None), _num(lat.p99 if lat else None),
            _num(m.throughput_per_s, 1),
            _num(cls.accuracy if cls else None, 4), _num(cls.top5 if cls else None, 4),
            _num(det.map50 if det else None, 4),
            ", ".join(read.missing),
        ])
    return rows


class ResultsDock(QWidget):
    report_opened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.out_dir: Path | None = None
        self.label = QLabel("No results yet.")
        self.open_button = QPushButton("Open report")
        self.open_button.setEnabled(False)
        self.folder_button = QPushButton("Open run folder")
        self.folder_button.setEnabled(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        bar = QHBoxLayout()
        bar.addWidget(self.label, 1)
        bar.addWidget(self.folder_button)
        bar.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.table)
        self.open_button.clicked.connect(self.open_report)
        self.folder_button.clicked.connect(lambda: self.out_dir and QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(self.out_dir))))

    @property
    def report_path(self) -> Path | None:
        return self.out_dir / "report.html" if self.out_dir else None

    def load(self, out_dir: Path) -> int:
        self.out_dir = Path(out_dir)
        rows = measurement_rows(self.out_dir)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        has_report = self.report_path is not None and self.report_path.exists()
        self.open_button.setEnabled(has_report)
        self.folder_button.setEnabled(True)
        self.label.setText(f"{len(rows)} runtime(s) in {self.out_dir}" + (" — report ready" if has_report else ""))
        return len(rows)

    def open_report(self) -> bool:
        path = self.report_path
        if path is None or not path.exists():
            return False
        self.report_opened.emit(str(path))
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
