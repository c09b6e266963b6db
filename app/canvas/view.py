"""The canvas view: zoom at the cursor, pan, fit, rubber-band selection, drops from the palette."""

from __future__ import annotations

from heiti.app.canvas import style
from heiti.app.canvas.scene import GraphScene
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QGraphicsView, QWidget

KIND_MIME = "application/x-heiti-kind"
MIN_SCALE, MAX_SCALE = 0.08, 3.0


class CanvasView(QGraphicsView):
    #: the user asked for the quick-add popup at this scene position (Tab, double-click)
    quick_add_requested = Signal(QPointF)

    def __init__(self, scene: GraphScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.graph_scene = scene
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setOptimizationFlags(QGraphicsView.OptimizationFlag.DontSavePainterState)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPoint | None = None
        self._space_down = False

    # --- zoom and pan ---------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float, anchor: QPoint | None = None) -> None:
        new = min(max(self.zoom * factor, MIN_SCALE), MAX_SCALE)
        factor = new / self.zoom
        if anchor is not None:
            before = self.mapToScene(anchor)
            self.scale(factor, factor)
            after = self.mapToScene(anchor)
            delta = after - before
            self.translate_scene(delta.x(), delta.y())
        else:
            self.scale(factor, factor)

    def translate_scene(self, dx: float, dy: float) -> None:
        """Shift the view so that scene content moves by (dx, dy) scene units on screen."""
        hbar, vbar = self.horizontalScrollBar(), self.verticalScrollBar()
        hbar.setValue(int(hbar.value() - dx * self.zoom))
        vbar.setValue(int(vbar.value() - dy * self.zoom))

    def pan_pixels(self, dx: int, dy: int) -> None:
        hbar, vbar = self.horizontalScrollBar(), self.verticalScrollBar()
        hbar.setValue(hbar.value() - dx)
        vbar.setValue(vbar.value() - dy)

    def reset_zoom(self) -> None:
        self.zoom_by(1.0 / self.zoom)

    def fit_all(self) -> None:
        rect = self.graph_scene.itemsBoundingRect()
        if rect.isEmpty():
            rect = QRectF(0, 0, 800, 500)
        self.fit_rect(rect)

    def fit_rect(self, rect: QRectF) -> None:
        rect = rect.adjusted(-60, -60, 60, 60)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom > 1.0:
            self.zoom_by(1.0 / self.zoom)
            self.centerOn(rect.center())
        elif self.zoom < MIN_SCALE:
            self.zoom_by(MIN_SCALE / self.zoom)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(1.0015 ** delta, event.position().toPoint())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pan = event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and self._space_down)
        if pan:
            self._pan_from = event.position().toPoint()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            pos = event.position().toPoint()
            delta = pos - self._pan_from
            self._pan_from = pos
            self.pan_pixels(delta.x(), delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = self.mapToScene(event.position().toPoint())
        if event.button() == Qt.MouseButton.LeftButton and self.graph_scene._node_at(pos) is None and not any(
                True for _ in self.graph_scene.items(pos)):
            self.quick_add_requested.emit(pos)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    # --- keys -----------------------------------------------------------------------------------
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent) and event.key() == Qt.Key.Key_Tab:
            self.quick_add_requested.emit(self.cursor_scene_pos())
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
        elif event.key() == Qt.Key.Key_Escape:
            self.graph_scene.cancel_wire()
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
        super().keyReleaseEvent(event)

    def cursor_scene_pos(self) -> QPointF:
        local = self.viewport().mapFromGlobal(self.cursor().pos())
        if not self.viewport().rect().contains(local):
            local = self.viewport().rect().center()
        return self.mapToScene(local)

    # --- drops from the palette -----------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802, ANN001
        if event.mimeData().hasFormat(KIND_MIME):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802, ANN001
        if event.mimeData().hasFormat(KIND_MIME):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802, ANN001
        if event.mimeData().hasFormat(KIND_MIME):
            kind = bytes(event.mimeData().data(KIND_MIME)).decode("utf-8")
            self.add_kind_at(kind, self.mapToScene(event.position().toPoint()))
            event.setDropAction(Qt.DropAction.CopyAction)  # never "move": the palette keeps its entry
            event.accept()
        else:
            super().dropEvent(event)

    def add_kind_at(self, kind: str, pos: QPointF) -> str:
        grid = style.GRID
        x, y = pos.x() - style.NODE_WIDTH / 2, pos.y() - style.HEADER_HEIGHT / 2
        if self.graph_scene.snap_to_grid:
            x, y = round(x / grid) * grid, round(y / grid) * grid
        node_id = self.graph_scene.doc.add_node(kind, (x, y))
        self.graph_scene.select_nodes([node_id])
        return node_id
