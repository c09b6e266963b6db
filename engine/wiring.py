"""Wiring rules: which output may feed which input, and why not. The one place they live.

`validate` applies them to a whole graph; the editor asks the same questions about one wire while
the user drags it (`Wiring.check`, `Wiring.ports_for`, `kinds_for`). Both therefore refuse and
accept exactly the same wires, in the same words. Nothing here runs a node or imports a framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from heiti.engine.formats import build_format_graph, describe_chain, propose_chain
from heiti.engine.node import In, Node
from heiti.engine.payloads import Payload
from heiti.engine.topology import downstream, upstream

if TYPE_CHECKING:
    import networkx as nx
    from heiti.engine.graph import EdgeSpec, Graph
    from heiti.engine.registry import Registry

PortRef = tuple[str, str, str]  # (node id, port name, "in" | "out")
WireKey = tuple[tuple[str, str], tuple[str, str]]  # ((src node, out port), (dst node, in port))


# --- rules on a single pair of ports ---------------------------------------------------------------
def types_compatible(out_type: type[Payload], in_type: type[Payload]) -> bool:
    """An output fits an input declared as its own type or a base of it.

    A generic `Payload` output fits only a generic input: what it carries is unknown until run
    time, and a wire the engine cannot vouch for must not look fine in the editor.
    """
    return issubclass(out_type, in_type)


def formats_meet(have: str | None, want: frozenset[str] | None) -> bool:
    """An unknown format (either side) is not a mismatch: it is checked when the node runs."""
    return have is None or want is None or have in want


def type_mismatch(src: tuple[str, str], out_type: type[Payload], dst: tuple[str, str], in_type: type[Payload]) -> str:
    return f"{src[0]}.{src[1]} gives a {out_type.__name__}, but {dst[0]}.{dst[1]} takes a {in_type.__name__}"


def format_mismatch(cls: type[Node], port: str, want: frozenset[str], have: str, src_node: str) -> str:
    return f"{cls.title or cls.kind} input {port!r} accepts {', '.join(sorted(want))}, got {have} from {src_node}"


def takes_another_wire(port: In, wires_already: int) -> bool:
    return port.multiple or wires_already == 0


def safe_input_formats(cls: type[Node], params: Any) -> dict[str, frozenset[str] | None]:
    """Formats each input accepts; the declared ones when a kind's override cannot cope with `params`."""
    try:
        return cls.input_formats(params)
    except Exception:  # noqa: BLE001 - a kind's override may not cope with missing params
        return {name: port.formats for name, port in cls.inputs.items()}


def safe_output_formats(cls: type[Node], params: Any, incoming: dict[str, str | None]) -> dict[str, str | None]:
    try:
        return cls.output_formats(params, incoming)
    except Exception:  # noqa: BLE001 - no format is better than a crash here
        return {}


def default_params(cls: type[Node]) -> Any:
    try:
        return cls.Params()
    except Exception:  # noqa: BLE001 - some kinds have required params
        return None


# --- converter chains ------------------------------------------------------------------------------
_format_graph_cache: dict[int, tuple[frozenset[str], nx.DiGraph]] = {}


def format_graph(registry: Registry) -> nx.DiGraph:
    """The registry's format graph, rebuilt only when its kinds change."""
    kinds = frozenset(registry.kinds())
    cached = _format_graph_cache.get(id(registry))
    if cached is None or cached[0] != kinds:
        cached = (kinds, build_format_graph(registry.classes()))
        _format_graph_cache[id(registry)] = cached
    return cached[1]


def converter_advice(registry: Registry, have: str, want: Iterable[str]) -> str:
    chain = propose_chain(format_graph(registry), have, want)
    return describe_chain(chain) if chain else "no converter chain is installed for this"


# --- questions about one graph ---------------------------------------------------------------------
class GraphFacts(Protocol):
    """What a validation knows of a graph (validate.ValidationResult has it all)."""

    params: dict[str, Any]
    formats: dict[tuple[str, str], str | None]
    nx_graph: nx.MultiDiGraph


def wire_key(edge: EdgeSpec) -> WireKey:
    return (tuple(edge.src), tuple(edge.dst))  # type: ignore[return-value]


class Wiring:
    """Answers "may this wire be drawn?" for a graph, from its latest validation (formats, params,
    topology): the same rules `validate` applies, asked before the wire exists."""

    def __init__(self, graph: Graph, registry: Registry, validation: GraphFacts) -> None:
        self.graph = graph
        self.registry = registry
        self.validation = validation

    def _class(self, node_id: str) -> type[Node] | None:
        if not self.graph.has_node(node_id):
            return None
        kind = self.graph.node(node_id).kind
        return self.registry.get(kind) if kind in self.registry else None

    def input_formats(self, node_id: str, port: str) -> frozenset[str] | None:
        cls = self._class(node_id)
        if cls is None:
            return None
        return safe_input_formats(cls, self.validation.params.get(node_id)).get(port)

    def check(self, src: tuple[str, str], dst: tuple[str, str], ignore: WireKey | None = None,
              cycle_check: bool = True, explain: bool = True) -> str | None:
        """None when the wire src -> dst may be drawn, else the reason. `ignore` names a wire being
        moved: it does not count as connected. `explain` adds the converter chain that would fit."""
        (s_node, s_port), (d_node, d_port) = src, dst
        if not (self.graph.has_node(s_node) and self.graph.has_node(d_node)):
            return "both ends must be nodes of this graph"
        s_cls, d_cls = self._class(s_node), self._class(d_node)
        if s_cls is None or d_cls is None:
            return "one end is a node of an unknown kind"
        if s_port not in s_cls.outputs:
            return f"{s_cls.kind} has no output {s_port!r}"
        if d_port not in d_cls.inputs:
            return f"{d_cls.kind} has no input {d_port!r}"
        if s_node == d_node:
            return "a node cannot feed itself"
        existing = [e for e in self.graph.edges_into(d_node) if wire_key(e) != ignore]
        if any(tuple(e.src) == tuple(src) and e.dst[1] == d_port for e in existing):
            return "these ports are connected already"
        in_port = d_cls.inputs[d_port]
        if not takes_another_wire(in_port, sum(e.dst[1] == d_port for e in existing)):
            return f"input {d_port!r} of {d_node} takes one wire and has one already; delete it first"
        out_t = s_cls.outputs[s_port].type
        if not types_compatible(out_t, in_port.type):
            return type_mismatch(src, out_t, dst, in_port.type)
        if cycle_check and s_node in downstream(self.validation.nx_graph, d_node):
            return f"this wire would close a cycle ({d_node} already feeds {s_node}); a pipeline must flow one way"
        have, want = self.validation.formats.get((s_node, s_port)), self.input_formats(d_node, d_port)
        if not formats_meet(have, want):
            assert have is not None and want is not None
            message = format_mismatch(d_cls, d_port, want, have, s_node)
            return f"{message} — {converter_advice(self.registry, have, want)}" if explain else message
        return None

    def ports_for(self, ref: PortRef, ignore: WireKey | None = None) -> set[PortRef]:
        """Every port a wire dragged from `ref` may end on: the rules of `check`, in one pass over
        the graph (it runs when a drag starts, on graphs of any size)."""
        node_id, port, direction = ref
        cls = self._class(node_id)
        found: set[PortRef] = set()
        if cls is None:
            return found
        v = self.validation
        blocked = {node_id} | (upstream(v.nx_graph, node_id) if direction == "out" else downstream(v.nx_graph, node_id))
        edges = [e for e in self.graph.edges if wire_key(e) != ignore]
        occupied = {(e.dst[0], e.dst[1]) for e in edges}
        existing = {wire_key(e) for e in edges}
        if direction == "out":
            out_t, have = cls.outputs[port].type, v.formats.get((node_id, port))
            for spec in self.graph.nodes:
                if spec.id in blocked or spec.kind not in self.registry:
                    continue
                other = self.registry.get(spec.kind)
                accepted = safe_input_formats(other, v.params.get(spec.id))
                for name, in_port in other.inputs.items():
                    if ((node_id, port), (spec.id, name)) in existing:
                        continue
                    if not takes_another_wire(in_port, int((spec.id, name) in occupied)):
                        continue
                    if types_compatible(out_t, in_port.type) and formats_meet(have, accepted.get(name)):
                        found.add((spec.id, name, "in"))
            return found
        in_port = cls.inputs[port]
        if not takes_another_wire(in_port, int((node_id, port) in occupied)):
            return found
        want = self.input_formats(node_id, port)
        for spec in self.graph.nodes:
            if spec.id in blocked or spec.kind not in self.registry:
                continue
            for name, out_port in self.registry.get(spec.kind).outputs.items():
                if ((spec.id, name), (node_id, port)) in existing:
                    continue
                if types_compatible(out_port.type, in_port.type) and formats_meet(v.formats.get((spec.id, name)), want):
                    found.add((spec.id, name, "out"))
        return found


def kinds_for(registry: Registry, direction: str, port_type: type[Payload],
              fmt: str | frozenset[str] | None) -> list[tuple[str, str]]:
    """(kind, port) of each installed kind a new node could join a dragged wire by (first fitting port).

    direction "out": the wire comes from an output of `port_type` with format `fmt` (str or None),
    so the candidates' inputs are searched; "in": it comes from an input accepting `fmt` (a set).
    Candidates are judged with default params, as the node would be added.
    """
    found = []
    for other in registry.classes():
        params = default_params(other)
        if direction == "out":
            accepted = safe_input_formats(other, params)
            ports = ((name, p.type, accepted.get(name)) for name, p in other.inputs.items())
            fits = (name for name, t, want in ports if types_compatible(port_type, t) and formats_meet(fmt, want))  # type: ignore[arg-type]
        else:
            outs = safe_output_formats(other, params, {})
            fits = (name for name, p in other.outputs.items()
                    if types_compatible(p.type, port_type) and formats_meet(outs.get(name), fmt))  # type: ignore[arg-type]
        name = next(fits, None)
        if name is not None:
            found.append((other.kind, name))
    return found
