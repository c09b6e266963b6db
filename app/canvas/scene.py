"""The scene: builds and updates items from the document's signals, and runs the wire drag.

The graph model is the truth. The scene never edits the graph itself; user gestures become calls
on the document (which pushes undo commands), and the resulting signals update the items.
"""

from __future__ import annotations

from heiti.app.canvas import style
from heiti.app.canvas.node_item import NodeItem
from heiti.app.canvas.port_item import PortItem
from heiti.app.canvas.wire_item import TempWire, WireItem
from heiti.app.document import EdgeKey, GraphDocument, PortRef, edge_key, position_of, safe_input_formats
from heiti.engine.graph import NodeSpec
from heiti.engine.validate import ValidationResult
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPainter, QPen, QTransform
from PySide6.QtWidgets import QGraphicsScene, QGraphicsSceneMouseEvent

SNAP_DISTANCE = 18.0


class GraphScene(QGraphicsScene):
    #: a wire the user drew was refused; the argument is the reason
    connection_refused = Signal(str)
    #: a wire was dropped on empty canvas: (port ref, scene position) -> offer compatible kinds
    wire_dropped = Signal(object, QPointF)
    #: informational text for the status bar
    message = Signal(str)

    def __init__(self, doc: GraphDocument) -> None:
        super().__init__()
        self.doc = doc
        self.snap_to_grid = True
        self.nodes: dict[str, NodeItem] = {}
        self.wires: dict[EdgeKey, WireItem] = {}
        self._temp: TempWire | None = None
        self._compatible: set[PortRef] = set()
        #: the wire picked up from an input, while it is being moved
        self._moving: WireItem | None = None
        self._press_positions: dict[str, tuple[float, float]] = {}
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        doc.reset.connect(self.rebuild)
        doc.node_added.connect(self._on_node_added)
        doc.node_removed.connect(self._on_node_removed)
        doc.node_moved.connect(self._on_node_moved)
        doc.edge_added.connect(self._on_edge_added)
        doc.edge_removed.connect(self._on_edge_removed)
        doc.validated.connect(self._on_validated)
        doc.node_changed.connect(self._mark_stale)
        self.rebuild()

    # --- building -------------------------------------------------------------------------------
    def rebuild(self) -> None:
        self.cancel_wire()
        self.clear()
        self.nodes.clear()
        self.wires.clear()
        for spec in self.doc.graph.nodes:
            self._add_node_item(spec)
        for edge in self.doc.graph.edges:
            self._on_edge_added(edge_key(edge))
        self._on_validated(self.doc.validation)
        self.setSceneRect(self.itemsBoundingRect().adjusted(-2000, -2000, 2000, 2000))

    def _on_node_added(self, node_id: str) -> None:
        self._add_node_item(self.doc.graph.node(node_id))
        self._grow_scene_rect(self.nodes[node_id])

    def _add_node_item(self, spec: NodeSpec) -> None:
        cls = self.doc.registry.get(spec.kind) if spec.kind in self.doc.registry else None
        item = NodeItem(spec.id, spec.kind, cls)
        item.setPos(*position_of(spec))
        self.addItem(item)
        self.nodes[spec.id] = item

    def _grow_scene_rect(self, item: NodeItem) -> None:
        rect = self.sceneRect()
        box = item.sceneBoundingRect().adjusted(-1000, -1000, 1000, 1000)
        if not rect.contains(box):
            self.setSceneRect(rect.united(box))

    def _on_node_removed(self, node_id: str) -> None:
        item = self.nodes.pop(node_id, None)
        if item is not None:
            for wire in list(item.wires):
                self._on_edge_removed(wire.key)
            self.removeItem(item)

    def _on_node_moved(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            x, y = self.doc.position(node_id)
            if (item.x(), item.y()) != (x, y):
                snap, self.snap_to_grid = self.snap_to_grid, False
                item.setPos(x, y)
                self.snap_to_grid = snap

    def _on_edge_added(self, key: EdgeKey) -> None:
        (s, sp), (d, dp) = key
        src_node, dst_node = self.nodes.get(s), self.nodes.get(d)
        if src_node is None or dst_node is None:
            return
        src, dst = src_node.port(sp, "out"), dst_node.port(dp, "in")
        if src is None or dst is None:
            return  # a wire to a port the kind lacks: validation reports it on the node
        wire = WireItem(key, src, dst)
        self.addItem(wire)
        self.wires[key] = wire
        src_node.wires.add(wire)
        dst_node.wires.add(wire)

    def _on_edge_removed(self, key: EdgeKey) -> None:
        wire = self.wires.pop(key, None)
        if wire is not None:
            wire.src.node.wires.discard(wire)
            wire.dst.node.wires.discard(wire)
            self.removeItem(wire)

    def _on_validated(self, result: ValidationResult) -> None:
        doc = self.doc
        for node_id, item in self.nodes.items():
            item.set_problems(doc.node_problems.get(node_id, []))
            for name, port in item.outputs.items():
                fmt = result.formats.get((node_id, name))
                if port.format_key != fmt:
                    port.format_key = fmt
                    port.set_format(fmt, f"format: {fmt}" if fmt else "format: decided when it runs")
            if item.inputs:
                cls = item.cls
                accepted = safe_input_formats(cls, result.params.get(node_id)) if cls else {}
                for name, port in item.inputs.items():
                    formats = accepted.get(name)
                    if port.format_key == formats and formats is not None:
                        continue
                    port.format_key = formats
                    first = sorted(formats)[0] if formats and len(formats) == 1 else None
                    port.set_format(first, "accepts: " + (", ".join(sorted(formats)) if formats else "any format"))
        for key, wire in self.wires.items():
            wire.set_colour(wire.src.colour)
            wire.set_problems(doc.edge_problems.get(key, []))

    # --- run state ------------------------------------------------------------------------------
    def set_node_state(self, node_id: str, state: str, progress: float | None = None, text: str | None = None) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            item.set_state(state, progress, text)

    def _mark_stale(self, node_id: str) -> None:
        """A changed node's last result, and everything downstream of it, no longer applies."""
        stale = {node_id} | self.doc.validation.downstream(node_id)
        for other in stale:
            item = self.nodes.get(other)
            if item is not None and item.state in ("done", "cached", "failed", "skipped", "cancelled"):
                item.set_state("idle", 0.0, "")

    def reset_states(self, state: str = "idle") -> None:
        for item in self.nodes.values():
            item.set_state(state, 0.0, "")

    # --- selection ------------------------------------------------------------------------------
    def selected_node_ids(self) -> list[str]:
        return [i.node_id for i in self.selectedItems() if isinstance(i, NodeItem)]

    def selected_edge_keys(self) -> list[EdgeKey]:
        return [i.key for i in self.selectedItems() if isinstance(i, WireItem)]

    def select_nodes(self, node_ids: list[str]) -> None:
        self.clearSelection()
        for node_id in node_ids:
            item = self.nodes.get(node_id)
            if item is not None:
                item.setSelected(True)

    # --- the wire drag (mouse handlers and tests call these) -----------------------------------
    def port_item(self, ref: PortRef) -> PortItem | None:
        node = self.nodes.get(ref[0])
        return node.port(ref[1], ref[2]) if node else None

    def start_wire(self, port: PortItem) -> None:
        """Start a wire at `port`; from an input that already has its one wire, pick that wire up."""
        self.cancel_wire()
        if port.direction == "in" and not port.multiple:
            held = next((w for w in port.node.wires if w.dst is port), None)
            if held is not None:
                self._moving = held
                held.setVisible(False)
                port = held.src
        self._temp = TempWire(port)
        self.addItem(self._temp)
        self._temp.follow(port.scene_anchor())
        ignore = self._moving.key if self._moving is not None else None
        self._compatible = self.doc.compatible_ports(port.ref, ignore=ignore)
        for node in self.nodes.values():
            for other in (*node.inputs.values(), *node.outputs.values()):
                if other is not port:
                    other.set_highlight(other.ref in self._compatible)

    def drag_wire_to(self, pos: QPointF) -> None:
        if self._temp is not None:
            target = self._port_near(pos)
            self._temp.follow(target.scene_anchor() if target is not None else pos)

    def finish_wire(self, pos: QPointF) -> str | None:
        """End the drag at `pos`: connect, refuse with a reason, or offer kinds for empty space."""
        if self._temp is None:
            return None
        start = self._temp.port
        compatible = self._compatible
        moving = self._moving.key if self._moving is not None else None
        target = self._port_near(pos, any_port=True)
        self.cancel_wire()
        if target is None:
            node = self._node_at(pos)
            if node is None and moving is not None:
                self.doc.remove_items([], [moving])  # a wire pulled off into empty space is deleted
                return None
            if node is None:
                self.wire_dropped.emit(start.ref, pos)
                return None
            ports = [p for p in (*node.inputs.values(), *node.outputs.values()) if p.ref in compatible]
            if len(ports) != 1:
                what = "no port that fits" if not ports else "several ports that fit"
                return self._refuse(f"{node.node_id} has {what}; drop the wire on a port")
            target = ports[0]
        if target.direction == start.direction:
            return self._refuse(f"connect an output to an input, not two {'outputs' if start.direction == 'out' else 'inputs'}")
        src, dst = (start, target) if start.direction == "out" else (target, start)
        ends = (src.node.node_id, src.name), (dst.node.node_id, dst.name)
        reason = self.doc.reconnect(moving, *ends) if moving is not None else self.doc.connect(*ends)
        if reason:
            return self._refuse(reason)
        self.message.emit(f"connected {src.node.node_id}.{src.name} → {dst.node.node_id}.{dst.name}")
        return None

    def _refuse(self, reason: str) -> str:
        self.connection_refused.emit(reason)
        return reason

    def cancel_wire(self) -> None:
        if self._moving is not None:
            if self._moving.scene() is self:
                self._moving.setVisible(True)
            self._moving = None
        if self._temp is not None:
            self.removeItem(self._temp)
            self._temp = None
            for node in self.nodes.values():
                for port in (*node.inputs.values(), *node.outputs.values()):
                    port.set_highlight(None)
        self._compatible = set()

    @property
    def dragging_wire(self) -> bool:
        return self._temp is not None

    def _port_near(self, pos: QPointF, any_port: bool = False) -> PortItem | None:
        """The port under `pos`, or the nearest compatible one within a few pixels."""
        box = QRectF(pos.x() - SNAP_DISTANCE, pos.y() - SNAP_DISTANCE, 2 * SNAP_DISTANCE, 2 * SNAP_DISTANCE)
        best, best_d = None, SNAP_DISTANCE * SNAP_DISTANCE
        for item in self.items(box):
            if not isinstance(item, PortItem) or (self._temp is not None and item is self._temp.port):
                continue
            if not any_port and item.ref not in self._compatible:
                continue
            d = item.scenePos() - pos
            dist = d.x() * d.x() + d.y() * d.y()
            if dist <= best_d or (any_port and item.contains(item.mapFromScene(pos))):
                best, best_d = item, dist
        return best

    def _node_at(self, pos: QPointF) -> NodeItem | None:
        for item in self.items(pos):
            while item is not None and not isinstance(item, NodeItem):
                item = item.parentItem()
            if item is not None:
                return item
        return None

    # --- mouse ----------------------------------------------------------------------------------
    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            item = self.itemAt(event.scenePos(), QTransform())
            if isinstance(item, PortItem):
                self.start_wire(item)
                event.accept()
                return
        super().mousePressEvent(event)
        self._press_positions = {i.node_id: (i.x(), i.y()) for i in self.selectedItems() if isinstance(i, NodeItem)}

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if self._temp is not None:
            self.drag_wire_to(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if self._temp is not None:
            self.finish_wire(event.scenePos())
            event.accept()
            return
        super().mouseReleaseEvent(event)
        self.commit_moves()

    def commit_moves(self) -> None:
        """Turn the node drags since the last press into one undoable move."""
        moves = {}
        for node_id, old in self._press_positions.items():
            item = self.nodes.get(node_id)
            if item is not None and (item.x(), item.y()) != old:
                moves[node_id] = (old, (item.x(), item.y()))
                self._grow_scene_rect(item)
        self._press_positions = {}
        self.doc.move_nodes(moves)

    # --- background grid ------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        painter.fillRect(rect, style.CANVAS_BG)
        scale = painter.worldTransform().m11()
        grid = style.GRID
        if scale < 0.45:
            grid *= 5
        if scale < 0.12:
            return
        left = int(rect.left()) - int(rect.left()) % grid
        top = int(rect.top()) - int(rect.top()) % grid
        minor, major = [], []
        x = left
        while x < rect.right():
            (major if x % (grid * 5) == 0 else minor).append((x, True))
            x += grid
        y = top
        while y < rect.bottom():
            (major if y % (grid * 5) == 0 else minor).append((y, False))
            y += grid
        for lines, colour in ((minor, style.GRID_MINOR), (major, style.GRID_MAJOR)):
            painter.setPen(QPen(colour, 0))
            for value, vertical in lines:
                if vertical:
                    painter.drawLine(QPointF(value, rect.top()), QPointF(value, rect.bottom()))
                else:
                    painter.drawLine(QPointF(rect.left(), value), QPointF(rect.right(), value))
