"""Automatic placement: columns by topological generation, rows ordered to keep wires short."""

from __future__ import annotations

from heiti.engine.graph import Graph
from heiti.engine.topology import generations

COLUMN_GAP = 90.0
ROW_GAP = 40.0


def layered_positions(graph: Graph, sizes: dict[str, tuple[float, float]], origin: tuple[float, float] = (0.0, 0.0),
                      ) -> dict[str, tuple[float, float]]:
    """Positions for every node: a column per generation; within a column, each node sits near the
    average row of the nodes that feed it (a barycentre pass), so wires cross less."""
    ids = [spec.id for spec in graph.nodes]
    links = [(e.src[0], e.dst[0]) for e in graph.edges]
    layers = generations(ids, links)
    if layers is None:  # a cycle: fall back to file order in one column
        layers = [ids]
    feeders_of: dict[str, list[str]] = {n: [] for n in ids}
    for a, b in links:
        if a in feeders_of and b in feeders_of:
            feeders_of[b].append(a)
    file_order = {spec.id: i for i, spec in enumerate(graph.nodes)}
    centre: dict[str, float] = {}
    positions: dict[str, tuple[float, float]] = {}
    x = origin[0]
    for layer in layers:
        def key(node_id: str) -> tuple[float, int]:
            feeders = [centre[p] for p in dict.fromkeys(feeders_of[node_id]) if p in centre]
            return (sum(feeders) / len(feeders) if feeders else float(file_order[node_id]) * 1e-3, file_order[node_id])

        layer.sort(key=key)
        width = max(sizes.get(n, (190.0, 80.0))[0] for n in layer)
        y = origin[1]
        for node_id in layer:
            w, h = sizes.get(node_id, (190.0, 80.0))
            positions[node_id] = (x, y)
            centre[node_id] = y + h / 2
            y += h + ROW_GAP
        x += width + COLUMN_GAP
    return positions
