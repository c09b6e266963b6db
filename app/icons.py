"""Toolbar icons painted in code, in the theme's colours (no image files to ship or lose)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

INK = QColor("#c5ccd6")
SIZE = 32


def _paint(draw) -> QIcon:  # noqa: ANN001
    icon = QIcon()
    for mode, colour in ((QIcon.Mode.Normal, INK), (QIcon.Mode.Disabled, QColor("#5b6270"))):
        pix = QPixmap(SIZE, SIZE)
        pix.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pix)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(colour, 2.4, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
        draw(painter, colour)
        painter.end()
        icon.addPixmap(pix, mode)
    return icon


def _new(p: QPainter, c: QColor) -> None:
    p.drawPolyline(QPolygonF([QPointF(19, 5), QPointF(8, 5), QPointF(8, 27), QPointF(24, 27), QPointF(24, 10),
                              QPointF(19, 5), QPointF(19, 10), QPointF(24, 10)]))


def _open(p: QPainter, c: QColor) -> None:
    p.drawPolyline(QPolygonF([QPointF(5, 25), QPointF(5, 8), QPointF(12, 8), QPointF(15, 11), QPointF(25, 11),
                              QPointF(25, 15)]))
    p.drawPolygon(QPolygonF([QPointF(5, 25), QPointF(10, 15), QPointF(28, 15), QPointF(23, 25)]))


def _save(p: QPainter, c: QColor) -> None:
    p.drawRoundedRect(QRectF(6, 6, 20, 20), 2, 2)
    p.drawRect(QRectF(11, 6, 10, 7))
    p.drawRect(QRectF(10, 18, 12, 8))


def _arrow(p: QPainter, c: QColor, flip: bool) -> None:
    path = QPainterPath(QPointF(9, 13))
    path.cubicTo(QPointF(14, 8), QPointF(26, 9), QPointF(25, 20))
    if flip:
        p.translate(SIZE, 0)
        p.scale(-1, 1)
    p.drawPath(path)
    p.drawPolyline(QPolygonF([QPointF(8, 6), QPointF(8, 14), QPointF(16, 14)]))


def _fit(p: QPainter, c: QColor) -> None:
    for x, y, dx, dy in ((6, 6, 1, 1), (26, 6, -1, 1), (6, 26, 1, -1), (26, 26, -1, -1)):
        p.drawPolyline(QPolygonF([QPointF(x, y + 6 * dy), QPointF(x, y), QPointF(x + 6 * dx, y)]))
    p.drawRect(QRectF(12, 12, 8, 8))


def _run(p: QPainter, c: QColor) -> None:
    colour = QColor("#46c46e") if c == INK else c
    p.setPen(QPen(colour, 2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
    p.setBrush(colour)
    p.drawPolygon(QPolygonF([QPointF(10, 6), QPointF(26, 16), QPointF(10, 26)]))


def _stop(p: QPainter, c: QColor) -> None:
    colour = QColor("#e5484d") if c == INK else c
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(colour)
    p.drawRoundedRect(QRectF(8, 8, 16, 16), 2, 2)


def _grid(p: QPainter, c: QColor) -> None:
    p.setPen(QPen(c, 1.6))
    for v in (8, 16, 24):
        p.drawLine(QPointF(v, 5), QPointF(v, 27))
        p.drawLine(QPointF(5, v), QPointF(27, v))


def _cache(p: QPainter, c: QColor) -> None:
    p.drawEllipse(QRectF(7, 5, 18, 7))
    p.drawLine(QPointF(7, 8.5), QPointF(7, 23.5))
    p.drawLine(QPointF(25, 8.5), QPointF(25, 23.5))
    p.drawArc(QRectF(7, 20, 18, 7), 180 * 16, 180 * 16)
    p.drawArc(QRectF(7, 13, 18, 7), 180 * 16, 180 * 16)


ICONS = {
    "new": _new, "open": _open, "save": _save, "undo": lambda p, c: _arrow(p, c, False),
    "redo": lambda p, c: _arrow(p, c, True), "fit": _fit, "run": _run, "stop": _stop, "snap": _grid,
    "cache": _cache,
}


def icon(name: str) -> QIcon:
    return _paint(ICONS[name])
