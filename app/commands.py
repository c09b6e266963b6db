"""Undo commands: every edit of the graph is one of these, pushed on the document's QUndoStack.

Each command remembers exactly what it changed (including list positions), so undo restores the
graph to an equal model, and therefore an identical file.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Protocol

from heiti.engine.graph import EdgeSpec, Graph, NodeSpec
from heiti.engine.wiring import WireKey as EdgeKey
from heiti.engine.wiring import wire_key as edge_key
from PySide6.QtGui import QUndoCommand


class GraphDocument(Protocol):
    """The raw edits a command makes (app/document.py's GraphDocument provides them); named here
    so that commands need not import the document that imports them."""

    graph: Graph

    def _insert_node(self, spec: NodeSpec, index: int | None = None) -> None: ...
    def _take_node(self, node_id: str) -> tuple[NodeSpec, int]: ...
    def _insert_edge(self, edge: EdgeSpec, index: int | None = None) -> None: ...
    def _take_edge(self, key: EdgeKey) -> tuple[EdgeSpec, int]: ...
    def _set_params(self, node_id: str, params: dict[str, Any]) -> None: ...
    def _set_position(self, node_id: str, pos: tuple[float, float]) -> None: ...
    def _set_graph_info(self, field: str, value: str) -> None: ...


SET_PARAMS_ID = 1001
SET_GRAPH_INFO_ID = 1002
MERGE_WINDOW_S = 2.0  # typing in one field within this gap is one undo step


class AddItems(QUndoCommand):
    """Add nodes and wires (a new node, a wire, a paste, a duplicate)."""

    def __init__(self, doc: GraphDocument, nodes: list[NodeSpec], edges: list[EdgeSpec], text: str) -> None:
        super().__init__(text)
        self.doc = doc
        self.nodes = [n.model_copy(deep=True) for n in nodes]
        self.edges = [e.model_copy(deep=True) for e in edges]

    def redo(self) -> None:
        for spec in self.nodes:
            self.doc._insert_node(spec.model_copy(deep=True))
        for edge in self.edges:
            self.doc._insert_edge(edge.model_copy(deep=True))

    def undo(self) -> None:
        for edge in reversed(self.edges):
            self.doc._take_edge(edge_key(edge))
        for spec in reversed(self.nodes):
            self.doc._take_node(spec.id)


class RemoveItems(QUndoCommand):
    """Delete nodes (with every wire touching them) and wires."""

    def __init__(self, doc: GraphDocument, node_ids: list[str], edge_keys: list[EdgeKey]) -> None:
        count = len(node_ids) or len(edge_keys)
        what = "node" if node_ids else "wire"
        super().__init__(f"Delete {count} {what}{'s' if count != 1 else ''}")
        self.doc = doc
        self.node_ids = list(node_ids)
        self.edge_keys = list(edge_keys)
        self.removed_edges: list[tuple[int, EdgeSpec]] = []
        self.removed_nodes: list[tuple[int, NodeSpec]] = []

    def redo(self) -> None:
        ids = set(self.node_ids)
        keys = set(self.edge_keys)
        graph = self.doc.graph
        doomed = [(i, e) for i, e in enumerate(graph.edges) if edge_key(e) in keys or e.src[0] in ids or e.dst[0] in ids]
        self.removed_edges = []
        for _, edge in reversed(doomed):
            taken, index = self.doc._take_edge(edge_key(edge))
            self.removed_edges.append((index, taken))
        self.removed_edges.reverse()
        positions = sorted((graph.nodes.index(graph.node(n)), n) for n in ids if graph.has_node(n))
        self.removed_nodes = []
        for _, node_id in reversed(positions):
            spec, index = self.doc._take_node(node_id)
            self.removed_nodes.append((index, spec))
        self.removed_nodes.reverse()

    def undo(self) -> None:
        for index, spec in self.removed_nodes:
            self.doc._insert_node(spec, index)
        for index, edge in self.removed_edges:
            self.doc._insert_edge(edge, index)


class MoveNodes(QUndoCommand):
    def __init__(self, doc: GraphDocument, moves: dict[str, tuple[tuple[float, float], tuple[float, float]]]) -> None:
        super().__init__(f"Move {len(moves)} node{'s' if len(moves) != 1 else ''}")
        self.doc = doc
        self.moves = dict(moves)

    def redo(self) -> None:
        for node_id, (_, new) in self.moves.items():
            self.doc._set_position(node_id, new)

    def undo(self) -> None:
        for node_id, (old, _) in self.moves.items():
            self.doc._set_position(node_id, old)


class SetParams(QUndoCommand):
    """Change a node's params; typing in one field merges into one step."""

    def __init__(self, doc: GraphDocument, node_id: str, old: dict[str, Any], new: dict[str, Any],
                 field: str | None) -> None:
        super().__init__(f"Set {node_id}.{field}" if field else f"Reset a param of {node_id}")
        self.doc = doc
        self.node_id = node_id
        self.old = copy.deepcopy(old)
        self.new = copy.deepcopy(new)
        self.field = field
        self.stamp = time.monotonic()

    def id(self) -> int:  # noqa: A003 - Qt's name
        return SET_PARAMS_ID

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, SetParams) or other.node_id != self.node_id or other.field != self.field or self.field is None:
            return False
        if other.stamp - self.stamp > MERGE_WINDOW_S:
            return False
        self.new = copy.deepcopy(other.new)
        self.stamp = other.stamp
        return True

    def redo(self) -> None:
        self.doc._set_params(self.node_id, self.new)

    def undo(self) -> None:
        self.doc._set_params(self.node_id, self.old)


class SetGraphInfo(QUndoCommand):
    """Rename the graph or change its description."""

    def __init__(self, doc: GraphDocument, field: str, old: str, new: str) -> None:
        super().__init__(f"Set graph {field}")
        self.doc = doc
        self.field = field
        self.old = old
        self.new = new

    def id(self) -> int:  # noqa: A003 - Qt's name
        return SET_GRAPH_INFO_ID

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if isinstance(other, SetGraphInfo) and other.field == self.field:
            self.new = other.new
            return True
        return False

    def redo(self) -> None:
        self.doc._set_graph_info(self.field, self.new)

    def undo(self) -> None:
        self.doc._set_graph_info(self.field, self.old)
