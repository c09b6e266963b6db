"""A port: the small circle on a node's side where wires start and end."""

from __future__ import annotations

from typing import Any, Protocol

from heiti.app.canvas import style
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget


class NodeItem(Protocol):
    """What a port and its users need of the node item that owns it (node_item.NodeItem, which
    imports this module: naming it here keeps the import one way)."""

    node_id: str
    wires: set[Any]


class PortItem(QGraphicsItem):
    """Knows its node, name and direction; the scene handles the wire drag that starts here."""

    HIT = style.PORT_RADIUS + 5

    def __init__(self, node: NodeItem, name: str, direction: str, type_name: str, required: bool = True,
                 multiple: bool = False) -> None:
        super().__init__(node)  # type: ignore[arg-type] - the owner is a QGraphicsItem
        self.node = node
        self.name = name
        self.direction = direction  # "in" | "out"
        self.type_name = type_name
        self.required = required
        self.multiple = multiple
        self.colour = style.format_colour(None, type_name)
        self.formats_text = ""
        #: what the format text was built from, to skip rebuilding it after each validation
        self.format_key: object = ()
        #: None = normal; True = a compatible end for the wire being dragged; False = not one
        self.highlight: bool | None = None
        self.hovered = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setZValue(2)

    @property
    def ref(self) -> tuple[str, str, str]:
        return (self.node.node_id, self.name, self.direction)

    def set_format(self, fmt: str | None, formats_text: str) -> None:
        colour = style.format_colour(fmt, self.type_name)
        if colour != self.colour or formats_text != self.formats_text:
            self.colour = colour
            self.formats_text = formats_text
            kind = "output" if self.direction == "out" else "input"
            extra = "" if self.required or self.direction == "out" else ", optional"
            extra += ", takes many wires" if self.multiple else ""
            self.setToolTip(f"{kind} <b>{self.name}</b>: {self.type_name}{extra}<br>{formats_text}")
            self.update()

    def set_highlight(self, value: bool | None) -> None:
        if value != self.highlight:
            self.highlight = value
            self.update()

    def scene_anchor(self) -> QPointF:
        return self.scenePos()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt's name
        r = self.HIT
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if option.levelOfDetailFromTransform(painter.worldTransform()) < 0.35 and self.highlight is None:
            return  # too small to see or hit; the node draws the box
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = style.PORT_RADIUS
        colour = QColor(self.colour)
        if self.highlight is False:
            colour.setAlpha(60)
        if self.highlight is True:
            painter.setPen(QPen(style.COMPATIBLE, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(QPointF(0, 0), r + 4, r + 4)
        painter.setPen(QPen(style.NODE_BODY.darker(130), 1.5))
        painter.setBrush(QBrush(colour.lighter(125) if self.hovered else colour))
        if self.multiple:
            painter.drawRoundedRect(QRectF(-r, -r, 2 * r, 2 * r), 2, 2)
        else:
            painter.drawEllipse(QPointF(0, 0), r, r)

    def hoverEnterEvent(self, event) -> None:  # noqa: N802, ANN001
        self.hovered = True
        self.update()

    def hoverLeaveEvent(self, event) -> None:  # noqa: N802, ANN001
        self.hovered = False
        self.update()
