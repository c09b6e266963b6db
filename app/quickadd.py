"""The quick-add popup: type a few letters, press Enter, and the node appears at the cursor."""

from __future__ import annotations

from heiti.app.fuzzy import rank
from heiti.app.palette import category_icon
from heiti.engine.registry import Registry
from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
PORT_ROLE = Qt.ItemDataRole.UserRole + 2


class QuickAdd(QFrame):
    """A popup list of node kinds filtered as you type. `chosen(kind, port)`; port is None unless
    the popup was opened from a dragged wire, when it names the port the new wire will join."""

    chosen = Signal(str, object)

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.registry = registry
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("QuickAdd")
        self.title = QLabel("Add node")
        self.title.setObjectName("QuickAddTitle")
        self.search = QLineEdit(placeholderText="Type to search…")
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        self.resize(320, 360)
        self._candidates: list[tuple[str, str | None]] = []
        self.search.textChanged.connect(self.refilter)
        self.search.installEventFilter(self)
        self.list.itemActivated.connect(self._pick)
        self.list.itemClicked.connect(self._pick)

    def open_for(self, candidates: list[tuple[str, str | None]], global_pos: QPoint, title: str = "Add node") -> None:
        """candidates: (kind, port or None)."""
        self._candidates = candidates
        self.title.setText(title)
        self.search.clear()
        self.refilter("")
        self.move(global_pos)
        self.show()
        self.search.setFocus()

    def refilter(self, text: str) -> None:
        entries = []
        for kind, port in self._candidates:
            cls = self.registry.get(kind)
            label = cls.title or kind
            entries.append(((kind, port), f"{label} {kind} {cls.category}"))
        self.list.clear()
        for kind, port in rank(text, entries):
            cls = self.registry.get(kind)
            label = (cls.title or kind) + (f"  → {port}" if port else "")
            item = QListWidgetItem(category_icon(cls.category), label)
            item.setToolTip(f"{kind} — {cls.describe()}")
            item.setData(KIND_ROLE, kind)
            item.setData(PORT_ROLE, port)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.search and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if key == Qt.Key.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(row, self.list.count() - 1)))
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.accept_current()
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(watched, event)

    def accept_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self._pick(item)

    def _pick(self, item: QListWidgetItem) -> None:
        self.hide()
        self.chosen.emit(item.data(KIND_ROLE), item.data(PORT_ROLE))
