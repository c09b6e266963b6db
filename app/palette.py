"""The palette: node kinds by category from the registry, a search filter, drag or double-click to add."""

from __future__ import annotations

from heiti.app.canvas import style
from heiti.app.canvas.view import KIND_MIME
from heiti.engine.node import Node
from heiti.engine.registry import Registry
from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

KIND_ROLE = Qt.ItemDataRole.UserRole + 1


def kind_tooltip(cls: type[Node]) -> str:
    ins = ", ".join(f"{n} ({p.type.__name__}{': ' + '|'.join(sorted(p.formats)) if p.formats else ''})"
                    for n, p in cls.inputs.items()) or "none"
    outs = ", ".join(f"{n} ({p.type.__name__}{': ' + p.format if p.format else ''})"
                     for n, p in cls.outputs.items()) or "none"
    return f"<b>{cls.title or cls.kind}</b> <i>{cls.kind}</i><br>{cls.describe()}<br><br>in: {ins}<br>out: {outs}"


def category_icon(category: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QBrush(style.category_colour(category)))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawRoundedRect(1, 1, 10, 10, 3, 3)
    painter.end()
    return QIcon(pix)


class KindTree(QTreeWidget):
    def mimeData(self, items: list[QTreeWidgetItem]) -> QMimeData:  # noqa: N802 - Qt's name
        data = QMimeData()
        kinds = [i.data(0, KIND_ROLE) for i in items if i.data(0, KIND_ROLE)]
        if kinds:
            data.setData(KIND_MIME, kinds[0].encode("utf-8"))
            data.setText(kinds[0])
        return data

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [KIND_MIME]

    def supportedDropActions(self) -> Qt.DropAction:  # noqa: N802 - drags out of here only copy
        return Qt.DropAction.CopyAction


class Palette(QWidget):
    #: the user double-clicked (or pressed Enter on) a kind
    kind_activated = Signal(str)

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.search = QLineEdit(placeholderText="Search nodes…")
        self.search.setClearButtonEnabled(True)
        self.tree = KindTree()
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QTreeWidget.DragDropMode.DragOnly)
        self.tree.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.tree.setIndentation(12)
        self.tree.setRootIsDecorated(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self.search.textChanged.connect(self.apply_filter)
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemDoubleClicked.connect(self._activated)
        self.populate()

    def populate(self) -> None:
        self.tree.clear()
        categories: dict[str, QTreeWidgetItem] = {}
        for cls in sorted(self.registry.classes(), key=lambda c: (c.category, c.title or c.kind)):
            parent = categories.get(cls.category)
            if parent is None:
                parent = QTreeWidgetItem(self.tree, [cls.category])
                parent.setIcon(0, category_icon(cls.category))
                parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
                font = parent.font(0)
                font.setBold(True)
                parent.setFont(0, font)
                categories[cls.category] = parent
            item = QTreeWidgetItem(parent, [cls.title or cls.kind])
            item.setData(0, KIND_ROLE, cls.kind)
            item.setToolTip(0, kind_tooltip(cls))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled)
        self.tree.expandAll()

    def apply_filter(self, text: str) -> None:
        needle = text.lower().strip()
        root = self.tree.invisibleRootItem()
        for i in range(root.childCount()):
            category = root.child(i)
            shown = 0
            for j in range(category.childCount()):
                item = category.child(j)
                kind = item.data(0, KIND_ROLE)
                cls = self.registry.get(kind)
                hay = f"{item.text(0)} {kind} {cls.describe()} {category.text(0)}".lower()
                visible = all(word in hay for word in needle.split())
                item.setHidden(not visible)
                shown += visible
            category.setHidden(shown == 0)
            category.setExpanded(True)

    def visible_kinds(self) -> list[str]:
        out = []
        root = self.tree.invisibleRootItem()
        for i in range(root.childCount()):
            category = root.child(i)
            for j in range(category.childCount()):
                item = category.child(j)
                if not item.isHidden() and not category.isHidden():
                    out.append(item.data(0, KIND_ROLE))
        return out

    def _activated(self, item: QTreeWidgetItem) -> None:
        kind = item.data(0, KIND_ROLE)
        if kind:
            self.kind_activated.emit(kind)
