"""A node on the canvas: title, ports with labels, run state (with a progress ring) and a badge."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from heiti.app.canvas import style
from heiti.app.canvas.port_item import PortItem
from heiti.engine.node import Node
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

if TYPE_CHECKING:
    from heiti.app.canvas.wire_item import WireItem

TITLE_FONT = QFont()
TITLE_FONT.setPixelSize(13)
TITLE_FONT.setBold(True)
SMALL_FONT = QFont()
SMALL_FONT.setPixelSize(11)
_TITLE_METRICS = QFontMetrics(TITLE_FONT)
_SMALL_METRICS = QFontMetrics(SMALL_FONT)
STATUS_SPACE = 20  # below the node: the running message or the error
LOW_DETAIL = 0.35  # below this zoom a node is drawn as a plain coloured box


@functools.lru_cache(maxsize=512)
def _elided_title(title: str, width: int) -> str:
    return _TITLE_METRICS.elidedText(title, Qt.TextElideMode.ElideRight, width)


class BadgeItem(QGraphicsItem):
    """The validation badge in a node's corner; its tooltip lists the node's problems."""

    SIZE = 18

    def __init__(self, parent: NodeItem) -> None:
        super().__init__(parent)
        self.setZValue(3)
        self.setVisible(False)
        self.setAcceptHoverEvents(True)

    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(-self.SIZE / 2, -self.SIZE / 2, self.SIZE, self.SIZE)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(style.CANVAS_BG, 2))
        painter.setBrush(style.INVALID)
        painter.drawEllipse(self.boundingRect().adjusted(1, 1, -1, -1))
        painter.setPen(QPen(QColor("white")))
        painter.setFont(TITLE_FONT)
        painter.drawText(self.boundingRect(), Qt.AlignmentFlag.AlignCenter, "!")


class NodeItem(QGraphicsItem):
    def __init__(self, node_id: str, kind: str, cls: type[Node] | None) -> None:
        super().__init__()
        self.node_id = node_id
        self.kind = kind
        self.cls = cls
        self.title = (cls.title or kind) if cls else kind
        self.category = cls.category if cls else "Unknown"
        self.accent = style.category_colour(self.category) if cls else style.INVALID
        self.state = "idle"
        self.progress = 0.0
        self.status_text = ""
        self.problems: list[str] = []
        self.wires: set[WireItem] = set()
        self.inputs: dict[str, PortItem] = {}
        self.outputs: dict[str, PortItem] = {}
        self.setFlags(
            QGraphicsItem.GraphicsItemFlag.ItemIsMovable
            | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
            | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges
        )
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setAcceptHoverEvents(True)
        rows = 1
        if cls is not None:
            for name, port in cls.inputs.items():
                self.inputs[name] = PortItem(self, name, "in", port.type.__name__, port.required, port.multiple)
            for name, port in cls.outputs.items():
                self.outputs[name] = PortItem(self, name, "out", port.type.__name__)
            rows = max(len(self.inputs), len(self.outputs), 1)
        self.width = float(style.NODE_WIDTH)
        self.height = float(style.HEADER_HEIGHT + rows * style.PORT_SPACING + 10)
        self._rect = QRectF(0, 0, self.width, self.height)
        for i, item in enumerate(self.inputs.values()):
            item.setPos(0, self._port_y(i))
        for i, item in enumerate(self.outputs.values()):
            item.setPos(self.width, self._port_y(i))
        self.badge = BadgeItem(self)
        self.badge.setPos(2, 2)
        self._title_text = _elided_title(self.title, int(self.width - 44))
        self._id_text = node_id if len(node_id) < 18 else _SMALL_METRICS.elidedText(
            node_id, Qt.TextElideMode.ElideMiddle, int(self.width - 44))
        description = cls.describe() if cls else "this node kind is not installed"
        self.setToolTip(f"<b>{self.title}</b> <i>{kind}</i> — id <code>{node_id}</code><br>{description}")

    def _port_y(self, index: int) -> float:
        return style.HEADER_HEIGHT + 8 + style.PORT_SPACING * index + style.PORT_SPACING / 2 - 4

    # --- model -> item --------------------------------------------------------------------------
    def port(self, name: str, direction: str) -> PortItem | None:
        return (self.outputs if direction == "out" else self.inputs).get(name)

    def set_state(self, state: str, progress: float | None = None, text: str | None = None) -> None:
        self.state = state
        if progress is not None:
            self.progress = progress
        if text is not None:
            self.status_text = text
        self.update()

    def set_problems(self, problems: list[str]) -> None:
        if problems != self.problems:
            self.problems = list(problems)
            self.badge.setVisible(bool(problems))
            self.badge.setToolTip("<br>".join(f"• {p}" for p in problems))
            self.update()

    # --- Qt -------------------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:  # noqa: N802
        return self._rect.adjusted(-4, -4, 4, STATUS_SPACE)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(self._rect, style.NODE_RADIUS, style.NODE_RADIUS)
        return path

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value):  # noqa: N802, ANN001, ANN201
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange:
            scene = self.scene()
            if scene is not None and getattr(scene, "snap_to_grid", False):
                grid = style.GRID
                return QPointF(round(value.x() / grid) * grid, round(value.y() / grid) * grid)
        elif change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for wire in self.wires:
                wire.update_path()
        return super().itemChange(change, value)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        rect = self._rect
        if option.levelOfDetailFromTransform(painter.worldTransform()) < LOW_DETAIL:
            self._paint_simple(painter)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = style.NODE_RADIUS
        body = QPainterPath()
        body.addRoundedRect(rect, r, r)
        painter.fillPath(body, style.NODE_BODY)
        header = QPainterPath()
        header.addRoundedRect(QRectF(0, 0, rect.width(), style.HEADER_HEIGHT), r, r)
        header.addRect(QRectF(0, style.HEADER_HEIGHT - r, rect.width(), r))
        painter.fillPath(header.simplified(), style.NODE_HEADER)
        painter.fillRect(QRectF(0, style.HEADER_HEIGHT - 2, rect.width(), 2), self.accent)

        state_colour = style.STATE_COLOURS.get(self.state)
        if self.isSelected():
            pen = QPen(style.NODE_SELECTED, 2.5)
        elif self.problems:
            pen = QPen(style.INVALID, 1.8)
        elif state_colour is not None:
            pen = QPen(state_colour, 2.2)
        else:
            pen = QPen(style.NODE_BORDER, 1.2)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect, r, r)

        painter.setFont(TITLE_FONT)
        painter.setPen(style.TEXT if self.cls else style.INVALID)
        painter.drawText(QPointF(14, 15), self._title_text)
        painter.setFont(SMALL_FONT)
        painter.setPen(style.TEXT_DIM)
        painter.drawText(QPointF(14, 28), self._id_text)

        self._paint_state(painter, QPointF(rect.width() - 18, style.HEADER_HEIGHT / 2))
        painter.setFont(SMALL_FONT)
        painter.setPen(style.TEXT)
        for item in self.inputs.values():
            painter.drawText(QPointF(12, item.y() + 4), item.name)
        for item in self.outputs.values():
            w = _SMALL_METRICS.horizontalAdvance(item.name)
            painter.drawText(QPointF(self.width - 12 - w, item.y() + 4), item.name)
        if self.status_text and self.state in ("running", "failed"):
            painter.setPen(style.TEXT_DIM if self.state == "running" else style.INVALID)
            text = _SMALL_METRICS.elidedText(self.status_text, Qt.TextElideMode.ElideRight, int(self.width - 16))
            painter.drawText(QPointF(8, rect.height() + 14), text)

    def _paint_simple(self, painter: QPainter) -> None:
        """Zoomed far out: a box in the state's (or category's) colour, no text."""
        state_colour = style.STATE_COLOURS.get(self.state)
        border = style.NODE_SELECTED if self.isSelected() else style.INVALID if self.problems else (
            state_colour or style.NODE_BORDER)
        painter.fillRect(self._rect, style.NODE_BODY)
        painter.fillRect(QRectF(0, 0, self.width, style.HEADER_HEIGHT), self.accent)
        painter.setPen(QPen(border, 3))
        painter.drawRect(self._rect)

    def _paint_state(self, painter: QPainter, centre: QPointF) -> None:
        colour = style.STATE_COLOURS.get(self.state)
        if colour is None:
            return
        radius = 8.0
        box = QRectF(centre.x() - radius, centre.y() - radius, 2 * radius, 2 * radius)
        if self.state == "running":
            painter.setPen(QPen(style.NODE_BORDER, 3))
            painter.drawEllipse(box)
            painter.setPen(QPen(colour, 3, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            span = -int(360 * 16 * max(self.progress, 0.03))
            painter.drawArc(box, 90 * 16, span)
            return
        if self.state == "pending":
            painter.setPen(QPen(colour, 2, Qt.PenStyle.DotLine))
            painter.drawEllipse(box)
            return
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(colour))
        painter.drawEllipse(box)
        painter.setPen(QPen(QColor("white"), 2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        c = centre
        if self.state == "done":
            painter.drawPolyline([QPointF(c.x() - 4, c.y()), QPointF(c.x() - 1, c.y() + 3), QPointF(c.x() + 4, c.y() - 3)])
        elif self.state in ("failed", "cancelled"):
            painter.drawLine(QPointF(c.x() - 3, c.y() - 3), QPointF(c.x() + 3, c.y() + 3))
            painter.drawLine(QPointF(c.x() + 3, c.y() - 3), QPointF(c.x() - 3, c.y() + 3))
        elif self.state == "cached":
            arc = QRectF(c.x() - 4, c.y() - 4, 8, 8)
            painter.drawArc(arc, 30 * 16, 280 * 16)
            tip = QPointF(c.x() + 4 * math.cos(math.radians(30)), c.y() - 4 * math.sin(math.radians(30)))
            painter.drawLine(tip, QPointF(tip.x() + 2.5, tip.y() - 2.5))
        elif self.state == "skipped":
            painter.drawLine(QPointF(c.x() - 4, c.y()), QPointF(c.x() + 4, c.y()))
