"""The report's figures as PNG bytes: decodable opaque PNGs of about the size asked for, cropped to
what was drawn with nothing cut (or laid out by matplotlib when labels are too long for that); one
draw of the canvas gives what savefig gives; the graph's layers without a graph library."""

from __future__ import annotations

import io

import numpy as np
import pytest
from heiti.nodes.reports import deferral, graph_picture, plots
from PIL import Image

RNG = np.random.default_rng(3)
SERIES = [{"label": f"runtime {i}", "values": list(RNG.gamma(4.0, 1.5 + i, 300)), "color": color, "count": 300}
          for i, color in enumerate(("#1f77b4", "#ff7f0e", "#2ca02c"))]
PANELS = [("CPU", "%", [{"label": "a", "t": [0, 1, 2, 3, 4], "values": [10, 50, 40, 45, 20], "color": "#1f77b4"}]),
          ("Memory", "MB", [{"label": "a", "t": [0, 1, 2, 3, 4], "values": [100, 180, 190, 190, 120],
                             "color": "#1f77b4"}])]
POINTS = [{"label": s["label"], "latency": 2.0 + i, "quality": 0.9 + i / 100, "size": 1000 * (i + 1),
           "color": s["color"], "baseline": i == 0} for i, s in enumerate(SERIES)]
#: name: (call, size asked for in inches)
CROPPED = {
    "violins": (lambda: plots.violins(SERIES), (7.2, 0.55 * 3 + 1.0)),
    "latency_over_calls": (lambda: plots.latency_over_calls(SERIES), (9.0, 3.0)),
    "timelines": (lambda: plots.timelines(PANELS), (7.2, 2.1 * 2 + 0.3)),
    "bubble_chart": (lambda: plots.bubble_chart(POINTS, "accuracy", 0.9), (9.0, 4.4)),
    "grouped_bars": (lambda: plots.grouped_bars(["cat", "dog"], [dict(s, values=[0.8, 0.9]) for s in SERIES],
                                                "AP (%)", "AP per class"), (min(1.0 + 0.35 * 2 * 3 + 1.5, 10.5), 3.0)),
}
#: figures laid out at exactly their size: name: (call, size in pixels)
EXACT = {
    "histograms": (lambda: plots.histograms(SERIES), (round((2.4 * 3 + 0.6) * plots.DPI), round(2.1 * plots.DPI))),
    "graph": (lambda: graph_picture.graph_picture([{"id": "a", "kind": "model.file"}, {"id": "b", "kind": "report.html"}],
                                          [("a", "b")], {"a": "done"}), (420, 125)),
}


def _decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes the whole stream: a truncated or corrupt PNG raises here
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.info["dpi"] == pytest.approx((plots.DPI, plots.DPI), abs=0.01)  # PNG stores pixels per metre
    assert len(image.getcolors(1 << 20)) > 10  # drawn, not blank
    return image


def _savefig_png(fig) -> bytes:
    """matplotlib's own savefig (a layout draw, then a second draw)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("name", sorted(CROPPED))
def test_a_cropped_figure_is_about_its_size_with_a_blank_pad_and_nothing_cut(name):
    call, (width, height) = CROPPED[name]
    image = _decoded(call())
    for got, asked in zip(image.size, (width * plots.DPI, height * plots.DPI), strict=True):
        assert 0.85 * asked <= got <= 1.15 * asked  # about the size asked for: labels differ in length
    ink = (np.asarray(image) != 255).any(axis=2)
    pad = plots._PAD_PX
    assert not ink[:pad].any() and not ink[-pad:].any() and not ink[:, :pad].any() and not ink[:, -pad:].any()
    # cropped tight: the drawing reaches the pad on every side (had it been cut, the crop would not be there)
    assert ink[pad].any() and ink[-pad - 1].any() and ink[:, pad].any() and ink[:, -pad - 1].any()


def test_labels_too_long_for_the_slack_are_laid_out_by_matplotlib_at_the_size_asked_for():
    import warnings

    series = [dict(SERIES[0], label="a runtime whose name goes on, and on, and on, and on")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained layout warns when the axes would collapse
        image = _decoded(plots.violins(series))
    assert image.size == (720, round((0.55 + 1.0) * plots.DPI))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_an_exact_figure_has_its_size_and_the_pixels_savefig_draws(name, monkeypatch):
    call, size = EXACT[name]
    png = call()
    assert _decoded(png).size == size
    monkeypatch.setattr(plots, "to_png", _savefig_png)
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
        mine = graph_picture._Wires(ids, edges)
        assert [sorted(layer) for layer in mine.generations()] == [sorted(x) for x in nx.topological_generations(g)]
        assert mine.edges == list(g.edges)


def test_a_graph_with_a_cycle_has_no_generations_and_is_still_drawn():
    assert graph_picture._Wires(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")]).generations() == []
    png = graph_picture.graph_picture([{"id": x} for x in "abc"], [("a", "b"), ("b", "a")], {})
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
    with deferral.deferred() as pending:
        plots.histograms(SERIES[:1])
        plots.timelines(PANELS[:1])
        plots.histograms(SERIES)
        plots.timelines(PANELS)
    pngs = deferral.draw_pending(pending)
    assert handed == ["timelines/2", "histograms/3", "timelines/1", "histograms/1"]
    assert sorted(pngs) == sorted(id(p) for p in pending) and set(pngs.values()) == {b"png"}
