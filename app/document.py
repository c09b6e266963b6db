"""The editor's document: the engine's Graph model plus Qt signals, an undo stack and validation.

The Graph is the truth. Every change goes through an undo command (app/commands.py) that calls the
raw `_insert_*`/`_take_*`/`_set_*` methods here; those edit the Graph and announce the change, and
the scene items follow. Nothing in this module draws anything, so it is testable without a view.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

from heiti.app import commands
from heiti.engine.graph import EdgeSpec, Graph, NodeSpec, load_graph
from heiti.engine.migrations import upgrade_graph
from heiti.engine.node import Node
from heiti.engine.registry import Registry
from heiti.engine.topology import generations
from heiti.engine.validate import ValidationResult, validate
from heiti.engine.wiring import PortRef, WireKey, Wiring, kinds_for, safe_input_formats, wire_key
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

EdgeKey = WireKey
__all__ = ["EdgeKey", "GraphDocument", "PortRef", "edge_key", "place_unpositioned", "position_of", "safe_input_formats"]

LAYER_DX, LAYER_DY = 260, 150

edge_key = wire_key


class GraphDocument(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    node_changed = Signal(str)
    node_moved = Signal(str)
    edge_added = Signal(object)
    edge_removed = Signal(object)
    reset = Signal()
    info_changed = Signal()
    validated = Signal(object)
    modified_changed = Signal(bool)
    path_changed = Signal(object)

    def __init__(self, registry: Registry, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.graph = Graph()
        self.path: Path | None = None
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._clean_changed)
        self.validation: ValidationResult = validate(self.graph, registry)
        self.node_problems: dict[str, list[str]] = {}
        self.edge_problems: dict[EdgeKey, list[str]] = {}
        self._validate_timer = QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(0)
        self._validate_timer.timeout.connect(self.validate_now)

    def _clean_changed(self, clean: bool) -> None:
        self.modified_changed.emit(not clean)

    # --- state ----------------------------------------------------------------------------------
    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def node_class(self, node_id: str) -> type[Node] | None:
        kind = self.graph.node(node_id).kind
        return self.registry.get(kind) if kind in self.registry else None

    def position(self, node_id: str) -> tuple[float, float]:
        return position_of(self.graph.node(node_id))

    # --- validation -----------------------------------------------------------------------------
    def schedule_validation(self) -> None:
        self._validate_timer.start()

    def validate_now(self) -> ValidationResult:
        self._validate_timer.stop()
        result = validate(self.graph, self.registry)
        self.validation = result
        nodes: dict[str, list[str]] = {}
        edges: dict[EdgeKey, list[str]] = {}
        for problem in result.problems:
            text = problem.message + (f" — {problem.suggestion}" if problem.suggestion else "")
            if problem.edge is not None and problem.edge < len(self.graph.edges):
                edges.setdefault(edge_key(self.graph.edges[problem.edge]), []).append(text)
            if problem.node is not None:
                nodes.setdefault(problem.node, []).append(text)
        self.node_problems, self.edge_problems = nodes, edges
        self.validated.emit(result)
        return result

    def _fresh_validation(self) -> ValidationResult:
        if self._validate_timer.isActive():
            return self.validate_now()
        return self.validation

    # --- port queries ---------------------------------------------------------------------------
    def output_format(self, node_id: str, port: str) -> str | None:
        return self._fresh_validation().formats.get((node_id, port))

    def wiring(self) -> Wiring:
        """The engine's wiring rules over this graph as it is now."""
        return Wiring(self.graph, self.registry, self._fresh_validation())

    def input_formats(self, node_id: str, port: str) -> frozenset[str] | None:
        return self.wiring().input_formats(node_id, port)

    def check_connection(self, src: tuple[str, str], dst: tuple[str, str], explain: bool = True,
                         cycle_check: bool = True, ignore: EdgeKey | None = None) -> str | None:
        """None when the wire src -> dst may be drawn, else the engine's reason (see engine/wiring.py).
        `ignore` names a wire being moved: it does not count as connected."""
        return self.wiring().check(src, dst, ignore=ignore, cycle_check=cycle_check, explain=explain)

    def compatible_ports(self, ref: PortRef, ignore: EdgeKey | None = None) -> set[PortRef]:
        """Every port a wire dragged from `ref` may end on."""
        return self.wiring().ports_for(ref, ignore=ignore)

    def compatible_kinds(self, ref: PortRef) -> list[tuple[str, str]]:
        """(kind, port) pairs of kinds whose port a new wire from `ref` could join."""
        node_id, port, direction = ref
        cls = self.node_class(node_id)
        if cls is None:
            return []
        if direction == "out":
            return kinds_for(self.registry, "out", cls.outputs[port].type, self.output_format(node_id, port))
        return kinds_for(self.registry, "in", cls.inputs[port].type, self.input_formats(node_id, port))

    # --- raw edits (called by undo commands only) -----------------------------------------------
    def _insert_node(self, spec: NodeSpec, index: int | None = None) -> None:
        self.graph.nodes.insert(len(self.graph.nodes) if index is None else index, spec)
        self.node_added.emit(spec.id)
        self.schedule_validation()

    def _take_node(self, node_id: str) -> tuple[NodeSpec, int]:
        spec = self.graph.node(node_id)
        index = self.graph.nodes.index(spec)
        del self.graph.nodes[index]
        self.node_removed.emit(node_id)
        self.schedule_validation()
        return spec, index

    def _insert_edge(self, edge: EdgeSpec, index: int | None = None) -> None:
        self.graph.edges.insert(len(self.graph.edges) if index is None else index, edge)
        self.edge_added.emit(edge_key(edge))
        self.schedule_validation()

    def _take_edge(self, key: EdgeKey) -> tuple[EdgeSpec, int]:
        index = next(i for i, e in enumerate(self.graph.edges) if edge_key(e) == key)
        edge = self.graph.edges.pop(index)
        self.edge_removed.emit(key)
        self.schedule_validation()
        return edge, index

    def _set_params(self, node_id: str, params: dict[str, Any]) -> None:
        self.graph.node(node_id).params = copy.deepcopy(params)
        self.node_changed.emit(node_id)
        self.schedule_validation()

    def _set_position(self, node_id: str, pos: tuple[float, float]) -> None:
        self.graph.node(node_id).ui["pos"] = [tidy(pos[0]), tidy(pos[1])]
        self.node_moved.emit(node_id)

    def _set_graph_info(self, field: str, value: str) -> None:
        setattr(self.graph, field, value)
        self.info_changed.emit()

    # --- edits as undoable commands -------------------------------------------------------------
    def add_node(self, kind: str, pos: tuple[float, float] = (0.0, 0.0), params: dict[str, Any] | None = None) -> str:
        cls = self.registry.get(kind)
        node_id = self.graph.new_id(self._id_base(kind))
        spec = NodeSpec(id=node_id, kind=kind, version=cls.version, params=dict(params or {}),
                        ui={"pos": [tidy(pos[0]), tidy(pos[1])]})
        self.undo_stack.push(commands.AddItems(self, [spec], [], f"Add {cls.title or kind}"))
        return node_id

    def _id_base(self, kind: str) -> str:
        """`digits` for dataset.digits; `runtime_torch` when a `torch` of another kind exists."""
        short = kind.split(".")[-1]
        pattern = re.compile(re.escape(short) + r"(_\d+)?")
        if any(spec.kind != kind and pattern.fullmatch(spec.id) for spec in self.graph.nodes):
            return kind.replace(".", "_")
        return short

    def add_node_wired(self, kind: str, pos: tuple[float, float], ref: PortRef, other_port: str) -> str:
        """Add a node and wire it to `ref` in one undo step (quick-add from a dragged wire)."""
        self.undo_stack.beginMacro(f"Add {kind} and connect")
        try:
            node_id = self.add_node(kind, pos)
            src, dst = ((ref[0], ref[1]), (node_id, other_port)) if ref[2] == "out" else (
                (node_id, other_port), (ref[0], ref[1]))
            self.connect(src, dst)
        finally:
            self.undo_stack.endMacro()
        return node_id

    def connect(self, src: tuple[str, str], dst: tuple[str, str]) -> str | None:
        """Draw a wire; returns None, or the reason it was refused."""
        reason = self.check_connection(src, dst)
        if reason is None:
            edge = EdgeSpec(**{"from": tuple(src), "to": tuple(dst)})
            self.undo_stack.push(commands.AddItems(self, [], [edge], f"Connect {src[0]} → {dst[0]}"))
        return reason

    def reconnect(self, old: EdgeKey, src: tuple[str, str], dst: tuple[str, str]) -> str | None:
        """Move an existing wire to new ends in one undo step; None, or why it was refused."""
        if (tuple(src), tuple(dst)) == old:
            return None
        reason = self.check_connection(src, dst, ignore=old)
        if reason is None:
            self.undo_stack.beginMacro(f"Reconnect {src[0]} → {dst[0]}")
            self.undo_stack.push(commands.RemoveItems(self, [], [old]))
            edge = EdgeSpec(**{"from": tuple(src), "to": tuple(dst)})
            self.undo_stack.push(commands.AddItems(self, [], [edge], "Connect"))
            self.undo_stack.endMacro()
        return reason

    def remove_items(self, node_ids: list[str], edge_keys: list[EdgeKey]) -> None:
        if node_ids or edge_keys:
            self.undo_stack.push(commands.RemoveItems(self, node_ids, edge_keys))

    def move_nodes(self, moves: dict[str, tuple[tuple[float, float], tuple[float, float]]]) -> None:
        """moves: node id -> (old position, new position)."""
        moves = {k: v for k, v in moves.items() if v[0] != v[1]}
        if moves:
            self.undo_stack.push(commands.MoveNodes(self, moves))

    def set_param(self, node_id: str, name: str, value: Any) -> None:
        old = self.graph.node(node_id).params
        if name in old and old[name] == value:
            return
        new = {**old, name: value}
        self.undo_stack.push(commands.SetParams(self, node_id, old, new, name))

    def set_graph_info(self, field: str, value: str) -> None:
        """Rename the graph (`name`) or change its `description`, undoably."""
        old = getattr(self.graph, field)
        if old != value:
            self.undo_stack.push(commands.SetGraphInfo(self, field, old, value))

    def set_params(self, node_id: str, params: dict[str, Any]) -> None:
        """Replace every param at once (an empty dict = all defaults), as one undo step."""
        old = self.graph.node(node_id).params
        if old != params:
            self.undo_stack.push(commands.SetParams(self, node_id, old, dict(params), None))

    def reset_param(self, node_id: str, name: str) -> None:
        old = self.graph.node(node_id).params
        if name in old:
            new = {k: v for k, v in old.items() if k != name}
            self.undo_stack.push(commands.SetParams(self, node_id, old, new, None))

    def fragment(self, node_ids: list[str]) -> Graph:
        """The selected nodes and the wires between them, as a graph in the engine's format."""
        keep = set(node_ids)
        part = Graph(name=self.graph.name)
        part.nodes = [spec.model_copy(deep=True) for spec in self.graph.nodes if spec.id in keep]
        part.edges = [e.model_copy(deep=True) for e in self.graph.edges if e.src[0] in keep and e.dst[0] in keep]
        return part

    def insert_fragment(self, part: Graph, offset: tuple[float, float] = (40.0, 40.0)) -> list[str]:
        """Paste: fresh ids, positions shifted, inner wires kept. Returns the new ids."""
        taken = Graph(nodes=list(self.graph.nodes))
        renamed: dict[str, str] = {}
        specs = []
        for spec in part.nodes:
            new = spec.model_copy(deep=True)
            new.id = taken.new_id(spec.id.rstrip("0123456789").rstrip("_") or spec.id)
            x, y = position_of(spec)
            new.ui["pos"] = [tidy(x + offset[0]), tidy(y + offset[1])]
            renamed[spec.id] = new.id
            taken.nodes.append(new)
            specs.append(new)
        edges = [EdgeSpec(**{"from": (renamed[e.src[0]], e.src[1]), "to": (renamed[e.dst[0]], e.dst[1])})
                 for e in part.edges if e.src[0] in renamed and e.dst[0] in renamed]
        if specs:
            self.undo_stack.push(commands.AddItems(self, specs, edges, f"Paste {len(specs)} node(s)"))
        return [s.id for s in specs]

    # --- files ----------------------------------------------------------------------------------
    def replace_graph(self, graph: Graph, path: Path | None) -> None:
        """Start over on `graph` (open, new, restore); the undo history is cleared. Nodes saved by
        older versions of their kinds are migrated here, so the next save writes current params."""
        upgrade_graph(graph, self.registry, stamp=False)
        place_unpositioned(graph)
        self.graph = graph
        self.undo_stack.clear()
        self.undo_stack.setClean()
        self.set_path(path)
        self.validate_now()
        self.reset.emit()
        self.modified_changed.emit(False)

    def open(self, path: str | Path) -> None:
        """Raises heiti.engine.graph.GraphLoadError with one message per problem."""
        self.replace_graph(load_graph(path), Path(path))

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no file name yet: use save as")
        for node_id in upgrade_graph(self.graph, self.registry):  # stamps each node with its kind's version
            self.node_changed.emit(node_id)
        self.graph.save(target)
        self.set_path(target)
        self.undo_stack.setClean()
        return target

    def set_path(self, path: Path | None) -> None:
        self.path = path
        self.path_changed.emit(path)


def tidy(value: float) -> float | int:
    """A coordinate as the file shows it: 120 rather than 120.0, one decimal at most."""
    value = round(float(value), 1)
    return int(value) if value.is_integer() else value


def place_unpositioned(graph: Graph) -> None:
    """Give nodes without a saved position a layered place, by topological generation."""
    missing = [spec for spec in graph.nodes if not _has_pos(spec)]
    if not missing:
        return
    layers = generations([spec.id for spec in graph.nodes], ((e.src[0], e.dst[0]) for e in graph.edges))
    if layers is None:
        layers = [[spec.id for spec in graph.nodes]]
    rows: dict[int, int] = {}
    for depth, layer in enumerate(layers):
        for node_id in layer:
            spec = graph.node(node_id)
            if not _has_pos(spec):
                row = rows.get(depth, 0)
                rows[depth] = row + 1
                spec.ui["pos"] = [40 + depth * LAYER_DX, 40 + row * LAYER_DY]


def position_of(spec: NodeSpec) -> tuple[float, float]:
    """The node's saved position; (0, 0) when it has none or it is not a pair of numbers."""
    if not _has_pos(spec):
        return 0.0, 0.0
    pos = spec.ui["pos"]
    return float(pos[0]), float(pos[1])


def _has_pos(spec: NodeSpec) -> bool:
    pos = spec.ui.get("pos")
    return isinstance(pos, list | tuple) and len(pos) >= 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pos[:2])
