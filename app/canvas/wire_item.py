"""A wire between two ports, coloured by the format it carries, red and dashed when invalid."""

from __future__ import annotations

from heiti.app.canvas import style
from heiti.app.canvas.port_item import PortItem
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem, QWidget


def wire_path(a: QPointF, b: QPointF) -> QPainterPath:
    """A horizontal S-curve from an output at `a` to an input at `b`."""
    path = QPainterPath(a)
    dx = max(abs(b.x() - a.x()) * 0.5, 40.0)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class WireItem(QGraphicsPathItem):
    def __init__(self, key: tuple, src: PortItem, dst: PortItem) -> None:
        super().__init__()
        self.key = key
        self.src = src
        self.dst = dst
        self.colour = QColor(src.colour)
        self.problems: list[str] = []
        self.hovered = False
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.setZValue(-1)
        self._update_tooltip()
        self.update_path()

    def update_path(self) -> None:
        self.setPath(wire_path(self.src.scene_anchor(), self.dst.scene_anchor()))

    def set_colour(self, colour: QColor) -> None:
        if colour != self.colour:
            self.colour = QColor(colour)
            self.update()

    def set_problems(self, problems: list[str]) -> None:
        if problems != self.problems:
            self.problems = list(problems)
            self._update_tooltip()
            self.update()

    def _update_tooltip(self) -> None:
        (s, sp), (d, dp) = self.key
        text = f"{s}.{sp} → {d}.{dp}"
        if self.src.formats_text:
            text += f"<br>{self.src.formats_text}"
        if self.problems:
            text += "<br><span style='color:#ff6b6b'>" + "<br>".join(self.problems) + "</span>"
        self.setToolTip(text)

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(12)
        return stroker.createStroke(self.path())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing,
                              option.levelOfDetailFromTransform(painter.worldTransform()) >= 0.35)
        colour = style.INVALID if self.problems else self.colour
        width = 2.5
        if self.isSelected():
            painter.setPen(QPen(style.NODE_SELECTED, 6, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            painter.drawPath(self.path())
        if self.hovered:
            width = 3.5
        pen = QPen(colour, width, Qt.PenStyle.DashLine if self.problems else Qt.PenStyle.SolidLine,
                   Qt.PenCapStyle.RoundCap)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())

    def hoverEnterEvent(self, event) -> None:  # noqa: N802, ANN001
        self.hovered = True
        self.update()

    def hoverLeaveEvent(self, event) -> None:  # noqa: N802, ANN001
        self.hovered = False
        self.update()


class TempWire(QGraphicsPathItem):
    """The wire following the mouse while the user drags from a port."""

    def __init__(self, port: PortItem) -> None:
        super().__init__()
        self.port = port
        pen = QPen(port.colour, 2.5, Qt.PenStyle.DashLine, Qt.PenCapStyle.RoundCap)
        self.setPen(pen)
        self.setZValue(10)

    def follow(self, pos: QPointF) -> None:
        anchor = self.port.scene_anchor()
        self.setPath(wire_path(anchor, pos) if self.port.direction == "out" else wire_path(pos, anchor))
