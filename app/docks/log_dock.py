"""The run log: per-node logs and errors; clicking a line selects its node on the canvas."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

LEVEL_COLOURS = {"error": QColor("#ff6b6b"), "warning": QColor("#f5a623"), "info": None, "run": QColor("#7fb4ff")}
ALL_NODES = "All nodes"
MAX_ROWS = 20000


class LogDock(QWidget):
    node_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node_filter = QComboBox()
        self.node_filter.addItem(ALL_NODES)
        self.errors_only = QCheckBox("Errors and warnings only")
        clear = QPushButton("Clear")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Time", "Node", "Level", "Message"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setColumnWidth(0, 70)
        self.tree.setColumnWidth(1, 110)
        self.tree.setColumnWidth(2, 60)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Click a line to see the whole message; its node is selected on the canvas.")
        bar = QHBoxLayout()
        bar.addWidget(self.node_filter)
        bar.addWidget(self.errors_only)
        bar.addStretch(1)
        bar.addWidget(clear)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.detail)
        split.setSizes([200, 60])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(split)
        clear.clicked.connect(self.clear)
        self.node_filter.currentTextChanged.connect(lambda _: self._refilter())
        self.errors_only.toggled.connect(lambda _: self._refilter())
        self.tree.currentItemChanged.connect(self._clicked)
        self.tree.itemClicked.connect(lambda item, _col: self._clicked(item))

    def add(self, node: str, level: str, message: str) -> QTreeWidgetItem:
        first_line = message.strip().splitlines()[0] if message.strip() else ""
        item = QTreeWidgetItem([time.strftime("%H:%M:%S"), node, level, first_line])
        item.setData(0, Qt.ItemDataRole.UserRole, message)
        item.setToolTip(3, message[:4000])
        colour = LEVEL_COLOURS.get(level)
        if colour is not None:
            for col in range(4):
                item.setForeground(col, QBrush(colour))
        self.tree.addTopLevelItem(item)
        if node and self.node_filter.findText(node) < 0:
            self.node_filter.addItem(node)
        item.setHidden(not self._visible(item))
        if self.tree.topLevelItemCount() > MAX_ROWS:
            self.tree.takeTopLevelItem(0)
        if not item.isHidden():
            self.tree.scrollToItem(item)
        return item

    def rows(self) -> list[tuple[str, str, str]]:
        """(node, level, whole message) of every line, for tests and exports."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            out.append((item.text(1), item.text(2), item.data(0, Qt.ItemDataRole.UserRole)))
        return out

    def clear(self) -> None:
        self.tree.clear()
        self.detail.clear()

    def _visible(self, item: QTreeWidgetItem) -> bool:
        chosen = self.node_filter.currentText()
        if chosen != ALL_NODES and item.text(1) != chosen:
            return False
        return not (self.errors_only.isChecked() and item.text(2) not in ("error", "warning"))

    def _refilter(self) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setHidden(not self._visible(item))

    def _clicked(self, item: QTreeWidgetItem | None, *_: object) -> None:
        if item is None:
            return
        self.detail.setPlainText(item.data(0, Qt.ItemDataRole.UserRole) or "")
        if item.text(1):
            self.node_clicked.emit(item.text(1))
