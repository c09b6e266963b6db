"""The pipeline as a picture: nodes layered left to right by topological generation, wires as
arrows, each node's border its state. Layers are found and ordered here (no networkx in a report)."""

from __future__ import annotations

from typing import Any

from heiti.nodes.reports import plots
from heiti.nodes.reports.deferral import deferrable

FAMILY_COLORS = {
    "dataset": "#dbeafe", "model": "#ede9fe", "train": "#fce7f3", "export": "#fef3c7", "convert": "#fef3c7",
    "optimizer": "#fef3c7", "compile": "#fef3c7", "quantize": "#fef3c7", "runtime": "#dcfce7",
    "target": "#e0f2fe", "report": "#f1f5f9",
}
STATE_EDGES = {"done": "#16a34a", "cached": "#0284c7", "failed": "#dc2626", "skipped": "#9ca3af",
               "cancelled": "#9ca3af"}


@deferrable
def graph_picture(nodes: list[dict[str, Any]], edges: list[tuple[str, str]], states: dict[str, str]) -> bytes:
    """Nodes layered left to right by topological generation; arrows for wires; border = state."""
    g = _Wires([n["id"] for n in nodes], edges)
    layers = _order_layers(g, [sorted(layer) for layer in g.generations()] or [sorted(g.successors_of)])
    kinds = {n["id"]: n.get("kind", "") for n in nodes}
    tallest = max((len(layer) for layer in layers), default=1)
    pos = {}
    for x, layer in enumerate(layers):
        for y, node_id in enumerate(layer):
            pos[node_id] = (x, (tallest - 1) / 2 - y + (len(layer) - 1) / 2 - (tallest - 1) / 2)
    with plots.plot_style():
        fig = plots.new_figure(min(1.9 * len(layers) + 0.4, 14), min(0.75 * tallest + 0.5, 9), layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        artists = {}
        for node_id, (x, y) in pos.items():
            kind = kinds.get(node_id, "")
            family = kind.split(".")[0]
            label = _short(node_id, 18) + ("\n" + _short(kind, 22) if kind else "")
            artists[node_id] = ax.text(
                x, y, label, ha="center", va="center", fontsize=8.5, zorder=3,
                bbox={"boxstyle": "round,pad=0.45", "facecolor": FAMILY_COLORS.get(family, "#f8fafc"),
                      "edgecolor": STATE_EDGES.get(states.get(node_id, ""), "#64748b"), "linewidth": 1.4})
        for a, b in g.edges:
            fan_out = len(g.successors_of[a]) > 4  # e.g. the dataset wired to every runtime: draw those lightly
            ax.annotate("", xy=(0, 0.5), xycoords=artists[b], xytext=(1, 0.5), textcoords=artists[a],
                        arrowprops={"arrowstyle": "-|>", "color": "#94a3b8" if fan_out else "#475569",
                                    "linewidth": 0.7 if fan_out else 1.1, "alpha": 0.55 if fan_out else 1.0,
                                    "connectionstyle": "arc3,rad=0.0", "shrinkA": 1, "shrinkB": 1}, zorder=2)
        ax.set_xlim(-0.6, len(layers) - 0.4)
        ax.set_ylim(-(tallest / 2) - 0.1, tallest / 2 + 0.1)
        return plots.to_png(fig)


class _Wires:
    """The graph's nodes and wires (duplicates dropped, wires to unknown nodes ignored), for laying
    it out: its own few lines, so that drawing a report imports no graph library (networkx takes
    a quarter of a second to import in a fresh worker)."""

    def __init__(self, nodes: list[str], edges: list[tuple[str, str]]) -> None:
        self.successors_of: dict[str, list[str]] = {n: [] for n in nodes}
        self.predecessors_of: dict[str, list[str]] = {n: [] for n in nodes}
        self.edges: list[tuple[str, str]] = []
        for a, b in dict.fromkeys(edges):
            if a in self.successors_of and b in self.successors_of:
                self.successors_of[a].append(b)
                self.predecessors_of[b].append(a)
        self.edges = [(a, b) for a, after in self.successors_of.items() for b in after]

    def successors(self, node: str) -> list[str]:
        return self.successors_of[node]

    def predecessors(self, node: str) -> list[str]:
        return self.predecessors_of[node]

    def generations(self) -> list[list[str]]:
        """Nodes layered by their longest path from a source (Kahn's algorithm); [] for a cycle."""
        waiting = {n: len(before) for n, before in self.predecessors_of.items()}
        layer, layers = [n for n, count in waiting.items() if not count], []
        while layer:
            layers.append(layer)
            following = []
            for node in layer:
                for after in self.successors_of[node]:
                    waiting[after] -= 1
                    if not waiting[after]:
                        following.append(after)
            layer = following
        return layers if sum(map(len, layers)) == len(waiting) else []


def _order_layers(g: Any, layers: list[list[str]], sweeps: int = 4) -> list[list[str]]:
    """Order nodes within each layer by the mean height of their neighbours (fewer crossings)."""
    layers = [list(layer) for layer in layers]

    def place(layer: list[str]) -> None:
        for k, node in enumerate(layer):
            height[node] = k - (len(layer) - 1) / 2

    height: dict[str, float] = {}
    for layer in layers:
        place(layer)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        for i in range(1, len(layers)) if down else range(len(layers) - 2, -1, -1):
            def key(node: str, down: bool = down) -> float:
                near = [height[n] for n in (g.predecessors(node) if down else g.successors(node))]
                return sum(near) / len(near) if near else height[node]
            layers[i].sort(key=key)
            place(layers[i])
    return layers


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
