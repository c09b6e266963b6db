"""The report's figures as PNG bytes: one draw of the canvas gives what matplotlib's savefig gives
(same pixels), decodable PNGs of the figure's size; the graph's layers without a graph library."""

from __future__ import annotations

import io

import numpy as np
import pytest
from heiti.nodes.reports import plots
from PIL import Image

RNG = np.random.default_rng(3)
SERIES = [{"label": f"runtime {i}", "values": list(RNG.gamma(4.0, 1.5 + i, 300)), "color": color, "count": 300}
          for i, color in enumerate(("#1f77b4", "#ff7f0e", "#2ca02c"))]
PANELS = [("CPU", "%", [{"label": "a", "t": [0, 1, 2, 3, 4], "values": [10, 50, 40, 45, 20], "color": "#1f77b4"}]),
          ("Memory", "MB", [{"label": "a", "t": [0, 1, 2, 3, 4], "values": [100, 180, 190, 190, 120],
                             "color": "#1f77b4"}])]
FIGURES = {  # name: (call, size in pixels at plots.DPI)
    "violins": (lambda: plots.violins(SERIES), (720, round((0.55 * 3 + 1.0) * plots.DPI))),
    "histograms": (lambda: plots.histograms(SERIES), (round((2.4 * 3 + 0.6) * plots.DPI), round(2.1 * plots.DPI))),
    "latency_over_calls": (lambda: plots.latency_over_calls(SERIES), (900, 300)),
    "timelines": (lambda: plots.timelines(PANELS), (720, round((2.1 * 2 + 0.3) * plots.DPI))),
    "graph": (lambda: plots.graph_picture([{"id": "a", "kind": "model.file"}, {"id": "b", "kind": "report.html"}],
                                          [("a", "b")], {"a": "done"}), (4.2 * plots.DPI, 1.25 * plots.DPI)),
}


def _savefig_png(fig) -> bytes:
    """What the figures were before: matplotlib's own savefig (a layout draw, then a second draw)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_figure_is_an_opaque_png_of_its_size_with_the_pixels_savefig_draws(name, monkeypatch):
    call, size = FIGURES[name]
    png = call()
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes the whole stream: a truncated or corrupt PNG raises here
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (round(size[0]), round(size[1]))
    assert image.info["dpi"] == pytest.approx((plots.DPI, plots.DPI), abs=0.01)  # PNG stores pixels per metre
    assert len(image.getcolors(1 << 20)) > 10  # drawn, not blank
    monkeypatch.setattr(plots, "_png", _savefig_png)
    assert np.array_equal(_pixels(png), _pixels(call()))  # same layout and content, one draw instead of two


def test_the_graph_layers_are_the_topological_generations():
    import networkx as nx

    for seed in range(30):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 12))
        ids = [f"n{i}" for i in rng.permutation(n)]
        edges = [(ids[a], ids[b]) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.3]
        edges += edges[:2] + [("n0", "elsewhere")]  # duplicates and a wire to no node are ignored
        g = nx.DiGraph()
        g.add_nodes_from(ids)
        g.add_edges_from((a, b) for a, b in edges if b in g)
        mine = plots._Wires(ids, edges)
        assert [sorted(layer) for layer in mine.generations()] == [sorted(x) for x in nx.topological_generations(g)]
        assert mine.edges == list(g.edges)


def test_a_graph_with_a_cycle_has_no_generations_and_is_still_drawn():
    assert plots._Wires(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")]).generations() == []
    png = plots.graph_picture([{"id": x} for x in "abc"], [("a", "b"), ("b", "a")], {})
    assert Image.open(io.BytesIO(png)).size[0] > 0


def test_figures_are_handed_out_costliest_first(monkeypatch):
    """So that no process is left drawing a big figure alone at the end: two panels before one,
    many runtimes before few, and every figure still drawn once."""
    from heiti.nodes.reports import drawing

    handed: list[str] = []

    def record(calls):
        handed.extend(f"{c.func.__name__}/{len(c.args[0])}" for c in calls)
        return [b"png"] * len(calls)

    monkeypatch.setattr(drawing, "draw_all", record)
    with plots.deferred() as pending:
        plots.histograms(SERIES[:1])
        plots.timelines(PANELS[:1])
        plots.histograms(SERIES)
        plots.timelines(PANELS)
    pngs = plots.draw_pending(pending)
    assert handed == ["timelines/2", "histograms/3", "timelines/1", "histograms/1"]
    assert sorted(pngs) == sorted(id(p) for p in pending) and set(pngs.values()) == {b"png"}
