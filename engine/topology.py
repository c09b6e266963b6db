"""Order questions about a graph's nodes (layers, upstream, downstream), answered with networkx.

The engine owns graph algorithms so that the editor asks here instead of importing networkx.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


def node_digraph(node_ids: Iterable[str], links: Iterable[tuple[str, str]]) -> nx.DiGraph:
    """A plain digraph of node ids; links whose ends are not nodes are left out."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(node_ids)
    g.add_edges_from((a, b) for a, b in links if g.has_node(a) and g.has_node(b))
    return g


def generations(node_ids: Iterable[str], links: Iterable[tuple[str, str]]) -> list[list[str]] | None:
    """Nodes by topological generation (sources first), each in the order given; None if cyclic."""
    import networkx as nx

    ids = list(node_ids)
    g = node_digraph(ids, links)
    position = {n: i for i, n in enumerate(ids)}
    try:
        return [sorted(layer, key=position.__getitem__) for layer in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:
        return None


def downstream(g: nx.DiGraph, node_id: str) -> set[str]:
    """Every node fed, directly or not, by `node_id` (empty when it is not in the graph)."""
    import networkx as nx

    return set(nx.descendants(g, node_id)) if node_id in g else set()


def upstream(g: nx.DiGraph, node_id: str) -> set[str]:
    """Every node that feeds `node_id`, directly or not."""
    import networkx as nx

    return set(nx.ancestors(g, node_id)) if node_id in g else set()
