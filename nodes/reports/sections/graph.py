"""The pipeline that produced the numbers: the graph as a picture and each step's time."""

from __future__ import annotations

from typing import Any

from heiti.nodes.reports.blocks import Figure, Group, Section, Table
from heiti.nodes.reports.collect import Report, RunInfo
from heiti.nodes.reports.fmt import seconds
from heiti.nodes.reports.graph_picture import graph_picture


def node_states(run: RunInfo) -> tuple[dict[str, str], dict[str, float]]:
    """node -> state (engine/states.py's reducer), and node -> seconds, from the run's events."""
    from heiti.engine.events import NodeFinished
    from heiti.engine.states import states_of

    if run.states is not None:  # a report node's own run: states declared to it, no clock times
        return dict(run.states), {}

    durations = {e.node: e.duration_s for e in run.events if isinstance(e, NodeFinished)}
    return dict(states_of(run.events)), durations


def _nodes_and_edges(graph: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    nodes = [n for n in graph.get("nodes", []) if isinstance(n, dict) and isinstance(n.get("id"), str)]
    edges = []
    for e in graph.get("edges", []):
        try:
            edges.append((str(e["from"][0]), str(e["to"][0])))
        except (KeyError, IndexError, TypeError):
            continue
    return nodes, edges


def build(report: Report) -> Section | None:
    runs = [r for r in report.runs if r.graph]
    if not runs:
        return None
    blocks: list = []
    for run in runs:
        nodes, edges = _nodes_and_edges(run.graph)
        if not nodes:
            continue
        states, durations = node_states(run)
        inner: list = [Figure(f"graph_{run.name}", graph_picture(nodes, edges, states),
                              "Left to right in execution order; border: green ran, blue cached, red failed, "
                              "grey skipped.")]
        if states:
            inner.append(Table.build(["node", "kind", "state", "time"],
                                     [[n["id"], n.get("kind", ""), states.get(n["id"], "—"),
                                       seconds(durations.get(n["id"]))] for n in nodes], numeric_from=3))
        title = run.graph.get("name") or run.name
        blocks.append(Group(title if len(runs) == 1 else f"{run.name}: {title}", inner))
    return Section("graph", "Pipeline", blocks) if blocks else None
