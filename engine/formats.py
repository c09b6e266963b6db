"""The format graph: which converter node kinds turn one model format into another.

Built from the registry, not written by hand: any node kind with a model input that accepts some
formats and a model output of a fixed, different format is a converter. Validation searches it
with `shortest_path` to propose a chain when a wire joins incompatible formats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from heiti.engine.node import Node
from heiti.engine.payloads import ModelArtifact

if TYPE_CHECKING:
    import networkx as nx


def build_format_graph(classes: Iterable[type[Node]]) -> nx.DiGraph:
    import networkx as nx

    graph = nx.DiGraph()
    for cls in classes:
        model_inputs = [p for p in cls.inputs.values() if issubclass(p.type, ModelArtifact) and p.formats]
        if len(model_inputs) != 1:
            continue
        for out in cls.outputs.values():
            if not issubclass(out.type, ModelArtifact) or not out.format:
                continue
            for src in model_inputs[0].formats or ():
                if src == out.format:
                    continue
                # keep the first kind found for an edge, plus every alternative for the message
                if graph.has_edge(src, out.format):
                    graph[src][out.format]["kinds"].append(cls.kind)
                else:
                    graph.add_edge(src, out.format, kinds=[cls.kind])
    return graph


def propose_chain(graph: nx.DiGraph, have: str, want: Iterable[str]) -> list[tuple[str, str, str]] | None:
    """Shortest chain of (from_format, to_format, kind) steps from `have` to any wanted format."""
    import networkx as nx

    best: list[str] | None = None
    if have not in graph:
        return None
    for target in sorted(want):
        if target not in graph:
            continue
        try:
            path = nx.shortest_path(graph, have, target)
        except nx.NetworkXNoPath:
            continue
        if best is None or len(path) < len(best):
            best = path
    if best is None:
        return None
    return [(a, b, graph[a][b]["kinds"][0]) for a, b in zip(best, best[1:], strict=False)]


def describe_chain(chain: list[tuple[str, str, str]]) -> str:
    formats = [chain[0][0]] + [step[1] for step in chain]
    kinds = [step[2] for step in chain]
    return f"wire {' → '.join(f'`{f}`' for f in formats)} through {', then '.join(kinds)}"
