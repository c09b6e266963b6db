"""Validation of a graph against the registry, with networkx.

All problems are reported at once, each tied to a node id or an edge, in words a user
understands. The wiring rules themselves (types, formats, one wire per input) live in
engine/wiring.py, which the editor asks too. Nothing here runs a node or imports a framework.

Two parts: the nodes (ids, kinds, params, the files path params name) and the structure (ports,
wires, types, cycles, formats, order: networkx). A run may pass `verdicts` (engine.verdicts): a
structure that passed before, with the same kinds' code, is then not checked again, and networkx
is imported only when a structure is checked or its graph asked for.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine import wiring
from heiti.engine.graph import Graph, format_validation_error
from heiti.engine.migrations import instantiate_params
from heiti.engine.node import Node
from heiti.engine.paths import path_param_problems
from heiti.engine.registry import Registry, default_registry
from heiti.engine.topology import downstream, upstream
from heiti.engine.verdicts import Verdicts, graph_key
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class Problem:
    code: str
    message: str
    node: str | None = None
    edge: int | None = None  # index into graph.edges
    field: str | None = None  # param name or port name
    severity: str = "error"
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        where = f"node {self.node}" if self.node is not None else ""
        if self.edge is not None:
            where = f"edge {self.edge}" + (f" ({where})" if where else "")
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} — {self.suggestion}" if self.suggestion else text


@dataclass
class ValidationResult:
    problems: list[Problem] = field(default_factory=list)
    params: dict[str, BaseModel] = field(default_factory=dict)
    classes: dict[str, type[Node]] = field(default_factory=dict)
    #: format of each output port, as far as it can be known before running (not kept with a verdict)
    formats: dict[tuple[str, str], str | None] = field(default_factory=dict)
    #: the graph judged: its networkx graph is built from it when first asked for
    source: Graph | None = None
    #: the order of a structure that passed before (engine.verdicts)
    known_order: list[str] | None = None
    _nx: Any = field(default=None, repr=False)

    @property
    def nx_graph(self) -> nx.MultiDiGraph:
        """The nodes (first of each id) and the wires between known nodes, as a networkx graph."""
        if self._nx is None:
            self._nx = _structure_graph(self.source)
        return self._nx

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def for_node(self, node_id: str) -> list[Problem]:
        return [p for p in self.problems if p.node == node_id]

    def for_edge(self, index: int) -> list[Problem]:
        return [p for p in self.problems if p.edge == index]

    def order(self) -> list[str]:
        """Node ids in a topological order (stable: by generation, then by file order)."""
        if self.known_order is not None:
            return list(self.known_order)
        import networkx as nx

        position = {n: i for i, n in enumerate(self.nx_graph.nodes)}
        order: list[str] = []
        for generation in nx.topological_generations(self.nx_graph):
            order.extend(sorted(generation, key=position.__getitem__))
        return order

    def downstream(self, node_id: str) -> set[str]:
        """Nodes fed by `node_id`, directly or not."""
        return downstream(self.nx_graph, node_id)

    def upstream(self, node_id: str) -> set[str]:
        """Nodes feeding `node_id`, directly or not."""
        return upstream(self.nx_graph, node_id)


def _structure_graph(graph: Graph | None) -> nx.MultiDiGraph:
    import networkx as nx

    g = nx.MultiDiGraph()
    if graph is None:
        return g
    for spec in graph.nodes:
        if spec.id not in g:
            g.add_node(spec.id, kind=spec.kind)
    for k, edge in enumerate(graph.edges):
        if edge.src[0] in g and edge.dst[0] in g:
            g.add_edge(edge.src[0], edge.dst[0], key=k, src_port=edge.src[1], dst_port=edge.dst[1])
    return g


def validate(graph: Graph, registry: Registry | None = None, verdicts: Verdicts | None = None) -> ValidationResult:
    """Every problem of `graph` at once. With `verdicts`, a structure that passed before with the
    same kinds' code is taken as passed again (its nodes are checked as always)."""
    registry = registry or default_registry()
    result = ValidationResult(source=graph)
    index_of = _check_nodes(graph, registry, result)
    key = None
    if verdicts is not None and result.ok:
        key = graph_key(graph, registry)
        result.known_order = verdicts.order(key, list(index_of))
        if result.known_order is not None:
            return result
    _check_structure(graph, registry, result, index_of)
    if key is not None and result.ok:
        verdicts.remember(key, result.order())  # type: ignore[union-attr]
    return result


def _check_nodes(graph: Graph, registry: Registry, result: ValidationResult) -> dict[str, int]:
    """Duplicate ids, kinds, kind versions, params, the files path params name; {id: index}."""
    problems = result.problems
    # nodes: duplicates, kinds, params
    index_of: dict[str, int] = {}
    for i, spec in enumerate(graph.nodes):
        if spec.id in index_of:
            problems.append(Problem("duplicate_id", f"id {spec.id!r} is used by nodes[{index_of[spec.id]}] and nodes[{i}]", node=spec.id))
            continue
        index_of[spec.id] = i
        if spec.kind not in registry:
            guess = difflib.get_close_matches(spec.kind, registry.kinds(), n=1, cutoff=0.6)
            problems.append(Problem(
                "unknown_kind", f"unknown node kind {spec.kind!r}", node=spec.id, field="kind",
                suggestion=f"did you mean {guess[0]}?" if guess else "see `heiti nodes` for the kinds installed",
            ))
            continue
        cls = registry.get(spec.kind)
        result.classes[spec.id] = cls
        if spec.version is not None and spec.version > cls.version:
            problems.append(Problem(
                "kind_version", f"params were saved by version {spec.version} of {spec.kind}; this Heiti has version {cls.version}",
                node=spec.id, field="version"))
            continue
        try:
            result.params[spec.id] = instantiate_params(cls, spec.params, spec.version)
        except ValidationError as err:
            for message in format_validation_error(err, prefix=(f"nodes[{i}]", "params"), model=cls.Params):
                loc, _, text = message.partition(": ")
                name = loc.split(".params.", 1)[1].split(".")[0].split("[")[0] if ".params." in loc else None
                problems.append(Problem("param", f"{loc}: {text}", node=spec.id, field=name))
        except Exception as err:  # noqa: BLE001 - a kind's own checks may raise anything
            problems.append(Problem("param", f"nodes[{i}].params: {err}", node=spec.id))
        if spec.id in result.params:  # files named by path params: missing, special (FIFO, /proc)
            missing = path_param_problems(cls, result.params[spec.id], graph.base_dir)
            for name, message in missing:
                relative = not Path(str(getattr(result.params[spec.id], name))).expanduser().is_absolute()
                problems.append(Problem("path", message, node=spec.id, field=name, suggestion=(
                    f"relative paths are taken from the graph file's folder ({graph.base_dir or Path.cwd()})"
                    if relative else None)))
            if not missing:  # what the kind itself reads from its files (a model's output shapes)
                problems += _file_problems(cls, spec.id, result.params[spec.id], graph.base_dir)

    return index_of


def _check_structure(graph: Graph, registry: Registry, result: ValidationResult, index_of: dict[str, int]) -> None:
    """Ports, wires, types, inputs, cycles and formats (networkx)."""
    import networkx as nx

    problems = result.problems
    g = result.nx_graph
    # edges: endpoints, ports, types
    wires_into: dict[tuple[str, str], list[int]] = {}
    seen: dict[wiring.WireKey, int] = {}
    for k, edge in enumerate(graph.edges):
        (src, src_port), (dst, dst_port) = edge.src, edge.dst
        bad = False
        for end, label in ((src, "from"), (dst, "to")):
            if end not in index_of:
                problems.append(Problem("unknown_node", f"edges[{k}].{label}: no node with id {end!r}", edge=k))
                bad = True
        if bad:
            continue
        src_cls, dst_cls = result.classes.get(src), result.classes.get(dst)
        if src_cls is not None and src_port not in src_cls.outputs:
            problems.append(Problem(
                "unknown_port", f"edges[{k}].from: {src_cls.kind} has no output {src_port!r} (outputs: {', '.join(src_cls.outputs) or 'none'})",
                node=src, edge=k, field=src_port))
            bad = True
        if dst_cls is not None and dst_port not in dst_cls.inputs:
            problems.append(Problem(
                "unknown_port", f"edges[{k}].to: {dst_cls.kind} has no input {dst_port!r} (inputs: {', '.join(dst_cls.inputs) or 'none'})",
                node=dst, edge=k, field=dst_port))
            bad = True
        if bad or src_cls is None or dst_cls is None:
            continue
        if wiring.wire_key(edge) in seen:
            problems.append(Problem(
                "duplicate_wire", f"edges[{k}] repeats edges[{seen[wiring.wire_key(edge)]}]: these ports are connected already",
                node=dst, edge=k, field=dst_port))
            continue
        seen[wiring.wire_key(edge)] = k
        wires_into.setdefault((dst, dst_port), []).append(k)
        out_t, in_t = src_cls.outputs[src_port].type, dst_cls.inputs[dst_port].type
        if not wiring.types_compatible(out_t, in_t):
            problems.append(Problem(
                "type_mismatch", wiring.type_mismatch(edge.src, out_t, edge.dst, in_t), node=dst, edge=k, field=dst_port))

    # inputs: several wires into one, required ones missing
    for node_id, cls in result.classes.items():
        for port_name, port in cls.inputs.items():
            wires = wires_into.get((node_id, port_name), [])
            if len(wires) > 1 and not wiring.takes_another_wire(port, 1):
                for k in wires[1:]:
                    problems.append(Problem(
                        "multiple_wires", f"input {port_name!r} takes one wire, but {len(wires)} are connected",
                        node=node_id, edge=k, field=port_name))
            if not wires and port.required:
                problems.append(Problem(
                    "missing_input", f"required input {port_name!r} ({port.type.__name__}) is not connected",
                    node=node_id, field=port_name))

    # cycles
    cyclic = False
    try:
        cycle = nx.find_cycle(g)
        cyclic = True
        ids = [edge[0] for edge in cycle] + [cycle[-1][1]]
        problems.append(Problem(
            "cycle", f"the graph has a cycle: {' → '.join(ids)}; a pipeline must flow one way",
            node=cycle[0][0], edge=cycle[0][2] if len(cycle[0]) > 2 else None))
    except nx.NetworkXNoCycle:
        pass

    if not cyclic:
        _check_formats(graph, result, registry)


def _file_problems(cls: type[Node], node_id: str, params: BaseModel, base: Path | None) -> list[Problem]:
    """The node class's own look into its files (`Node.file_problems`); a probe that fails is a problem
    of the file, said as such, never a crash of validation."""
    try:
        found = cls.file_problems(params, base)
    except Exception as err:  # noqa: BLE001 - a damaged file may make a parser raise anything
        return [Problem("file", f"cannot read the files its params name: {type(err).__name__}: {str(err)[:300]}",
                        node=node_id)]
    return [Problem("file", message, node=node_id, field=name) for name, message in found]


def _check_formats(graph: Graph, result: ValidationResult, registry: Registry) -> None:
    """Propagate formats in topological order and flag wires whose formats cannot meet."""
    edges_by_dst: dict[str, list[int]] = {}
    for k, edge in enumerate(graph.edges):
        edges_by_dst.setdefault(edge.dst[0], []).append(k)
    for node_id in result.order():
        cls = result.classes.get(node_id)
        if cls is None:
            continue
        params = result.params.get(node_id)
        accepted = wiring.safe_input_formats(cls, params)
        incoming: dict[str, str | None] = {}
        for k in edges_by_dst.get(node_id, []):
            edge = graph.edges[k]
            have = result.formats.get((edge.src[0], edge.src[1]))
            port = edge.dst[1]
            if port not in cls.inputs:
                continue
            incoming.setdefault(port, have)
            want = accepted.get(port)
            if wiring.formats_meet(have, want):
                continue
            assert have is not None and want is not None
            result.problems.append(Problem(
                "format_mismatch", wiring.format_mismatch(cls, port, want, have, edge.src[0]),
                node=node_id, edge=k, field=port, suggestion=wiring.converter_advice(registry, have, want),
            ))
        outs = wiring.safe_output_formats(cls, params, incoming)
        for port in cls.outputs:
            result.formats[(node_id, port)] = outs.get(port)
