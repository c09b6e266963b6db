"""Report figures with matplotlib's Agg canvas (no display, no pyplot state), returned as PNG bytes.

matplotlib is imported inside each function so that listing node kinds stays fast. Figures are
small (dpi 100) so that a report over many runtimes renders in seconds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from heiti.nodes.reports.deferral import deferrable

DPI = 100
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "#e3e6ea", "grid.linewidth": 0.8, "axes.edgecolor": "#9aa3ad", "axes.axisbelow": True,
    "font.family": "DejaVu Sans", "axes.titleweight": "bold", "axes.titlelocation": "left",
    # titles sit on the axes (no figure has ticks or labels on top): matplotlib's automatic title
    # placement would measure every axis again at each draw to find that out (a fifth of a figure's
    # time); and no offset text (+2.83e2) that could then overlap a title: plain numbers
    "axes.titley": 1.0, "axes.formatter.useoffset": False,
}


#: room (inches: left, right, top, bottom) on the canvas around a cropped figure's intended box for
#: what may stick out of it (longer tick labels than usual); the crop keeps what was drawn. Labels
#: longer still go to constrained layout: a figure never comes out much wider than asked for
_SLACK = (1.3, 0.6, 0.4, 0.5)
#: what tick labels, axis labels and the title usually take inside the intended box (left, right,
#: top, bottom), so that a cropped figure comes out about the size asked for
_DECORATION = (0.55, 0.08, 0.22, 0.47)
#: blank pixels kept around a cropped figure's drawing (constrained layout's pad: 3/72 in)
_PAD_PX = 4


def new_figure(width: float, height: float, layout: str | None = "cropped", legend: Sequence[str] = (),
            grid: tuple[int, int] = (1, 1), gaps: tuple[float, float] = (0.8, 0.42)) -> Any:
    """A figure on an Agg canvas, about width x height inches.

    "cropped" (the default): the axes get the intended box less the usual room for labels (and the
    room `legend`'s labels take beside it), on a canvas with `_SLACK` around it, and `to_png` keeps
    what was drawn: one draw, where constrained layout first measures every label (an eighth of the
    time of the MobileNetV2 flow's figures, a quarter for stacked panels). `grid` (rows, cols) and `gaps` (inches between columns, between rows) place the
    axes that `add_subplot`/`subplots` then make. "constrained": matplotlib's layout at exactly
    that size; None: placed by hand.
    """
    # the Agg canvas is attached explicitly: no pyplot, no global backend switch (the editor may run
    # a report on a worker thread next to its own Qt plots)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if layout != "cropped":
        fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
        FigureCanvasAgg(fig)
        return fig
    left, right, top, bottom = _SLACK
    beside = _legend_width(legend)
    canvas_w, canvas_h = width + left + right, height + top + bottom
    fig = Figure(figsize=(canvas_w, canvas_h), dpi=DPI)
    FigureCanvasAgg(fig)
    rows, cols = grid
    box_l, box_t = left + _DECORATION[0], top + _DECORATION[2]
    box_w = width - _DECORATION[0] - _DECORATION[1] - beside
    box_h = height - _DECORATION[2] - _DECORATION[3]
    axes_w = max((box_w - gaps[0] * (cols - 1)) / cols, 0.5)
    axes_h = max((box_h - gaps[1] * (rows - 1)) / rows, 0.3)
    fig.subplots_adjust(left=box_l / canvas_w, right=(box_l + cols * axes_w + (cols - 1) * gaps[0]) / canvas_w,
                        top=1 - box_t / canvas_h, bottom=1 - (box_t + rows * axes_h + (rows - 1) * gaps[1]) / canvas_h,
                        wspace=gaps[0] / axes_w, hspace=gaps[1] / axes_h)
    fig.heiti_intended_size = (width, height)
    return fig


def _legend_width(labels: Sequence[str]) -> float:
    """Inches a legend of these labels takes beside the axes (legend.fontsize, a line handle, pads)."""
    if not labels:
        return 0.0
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    size = STYLE["legend.fontsize"]
    prop = FontProperties(family=STYLE["font.family"], size=size)
    measure = TextToPath()
    widest = max(measure.get_text_width_height_descent(line, prop, ismath=False)[0]
                 for label in labels for line in str(label).split("\n"))
    # the anchor's 0.01 of the axes, border pad, handle and the pad after it (matplotlib's defaults, in font sizes)
    return (widest + (0.4 + 2.0 + 0.8 + 0.4) * size) / 72 + 0.1


def plot_style() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)


#: zlib level of the PNGs: at 1 these flat plots (RGB) come out about as small as matplotlib's own
#: RGBA PNGs at level 6, and encode in about two thirds of the time level 6 takes
PNG_LEVEL = 1


def to_png(fig: Any) -> bytes:
    """The figure as opaque RGB PNG bytes, from one draw of the Agg canvas (layout included):
    savefig would draw twice with a layout engine (once to lay out, once to render). A cropped
    figure keeps what was drawn and `_PAD_PX` around it; should its drawing reach the canvas's edge
    (labels longer than the slack), constrained layout fits it into the size intended instead."""
    from PIL import Image

    fig.patch.set_facecolor("white")
    canvas = fig.canvas
    canvas.draw()
    size = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    intended = getattr(fig, "heiti_intended_size", None)
    if intended is not None:
        ink = (np.asarray(image) != 255).any(axis=2)
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if not rows.size or rows[0] == 0 or cols[0] == 0 or rows[-1] == size[1] - 1 or cols[-1] == size[0] - 1:
            fig.heiti_intended_size = None  # it may go beyond the canvas: let matplotlib fit it
            fig.set_size_inches(*intended)
            fig.set_layout_engine("constrained")
            return to_png(fig)
        image = image.crop((max(cols[0] - _PAD_PX, 0), max(rows[0] - _PAD_PX, 0),
                            min(cols[-1] + 1 + _PAD_PX, size[0]), min(rows[-1] + 1 + _PAD_PX, size[1])))
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=PNG_LEVEL, dpi=(DPI, DPI))
    return buf.getvalue()


def warm() -> None:
    """Draw one small figure, so that the report's figures (and the helpers forked to draw them,
    which inherit this) start with the fonts loaded, the tick, legend and log-scale code run once
    and the PNG encoder imported: a report node's warm-up, made before its inputs arrive."""
    with plot_style():
        fig = new_figure(2.4, 1.6, legend=["a"])
        ax = fig.add_subplot()
        ax.plot([1.0, 10.0, 100.0], [1.0, 3.0, 2.0], marker=".", label="a")
        ax.hist([1.0, 2.0, 2.0, 3.0], bins=3)
        _log_x(ax, decades=2.0)
        ax.set_title("warm-up")
        ax.set_xlabel("ms")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.text(1, 1, "1", fontweight="bold", bbox={"boxstyle": "round,pad=0.45", "facecolor": "#f1f5f9"})
        to_png(fig)


def _log_scale_wanted(values: Sequence[float]) -> bool:
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > 20


# --- comparison ---------------------------------------------------------------------------------
@deferrable
def bubble_chart(points: list[dict[str, Any]], quality_name: str, floor: float | None,
                 statistic: str = "mean") -> bytes:
    """Quality (y) against latency (x, the mean or median); bubble area proportional to model size.

    points: {label, latency, quality, size, color, baseline}; `floor` draws the tolerance line.
    """
    from matplotlib.lines import Line2D

    labels = [f"{i}  {p['label']}" + (" (baseline)" if p.get("baseline") else "") for i, p in enumerate(points, 1)]
    with plot_style():
        fig = new_figure(9.0, 4.4, legend=labels)
        ax = fig.add_subplot()
        sizes = [p["size"] or 0 for p in points]
        biggest = max(sizes) if any(sizes) else 1
        handles = []
        for i, p in enumerate(points, start=1):
            area = 40 + 1400 * ((p["size"] or biggest * 0.05) / biggest)
            ax.scatter([p["latency"]], [p["quality"] * 100], s=area, color=p["color"], alpha=0.5,
                       edgecolor="black" if p.get("baseline") else p["color"], linewidth=1.6 if p.get("baseline") else 1,
                       zorder=3)
            ax.annotate(str(i), (p["latency"], p["quality"] * 100), ha="center", va="center", fontsize=8,
                        fontweight="bold", zorder=4)
            handles.append(Line2D([], [], marker="o", linestyle="", markersize=8, color=p["color"], alpha=0.7,
                                  markeredgecolor="black" if p.get("baseline") else p["color"], label=labels[i - 1]))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  handletextpad=0.3, labelspacing=0.7)
        if floor is not None:
            ax.axhline(floor * 100, color="#c0392b", linestyle="--", linewidth=1)
            ax.annotate("accuracy tolerance", (1, floor * 100), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=7, color="#c0392b")
        latencies = [p["latency"] for p in points if p["latency"] and p["latency"] > 0]
        if _log_scale_wanted(latencies):
            _log_x(ax, decades=math.log10(max(latencies) / min(latencies)))
        ax.margins(x=0.12, y=0.3)
        ax.set_xlabel(f"{statistic} latency per inference (ms) — lower is better")
        ax.set_ylabel(f"{quality_name} (%) — higher is better")
        ax.set_title("Quality vs latency (bubble area = model size)")
        return to_png(fig)


@deferrable
def violins(series: list[dict[str, Any]]) -> bytes:
    """Horizontal violins of per-inference latency, one per runtime (top = first)."""
    with plot_style():
        fig = new_figure(7.2, 0.55 * len(series) + 1.0)
        ax = fig.add_subplot()
        data = [_thin(_clip_tail(np.asarray(s["values"], dtype=float))) for s in series]
        positions = list(range(len(series), 0, -1))
        parts = ax.violinplot(data, positions=positions, orientation="horizontal", widths=0.8,
                              showmedians=True, showextrema=False)
        for body, s in zip(parts["bodies"], series, strict=True):
            body.set_facecolor(s["color"])
            body.set_edgecolor(s["color"])
            body.set_alpha(0.55)
        parts["cmedians"].set_color("#222")
        for pos, values in zip(positions, data, strict=True):
            p99 = float(np.percentile(values, 99))
            ax.plot([p99], [pos], marker="|", color="#c0392b", markersize=10)
        ax.set_yticks(positions, [s["label"] for s in series])
        medians = [float(np.median(d)) for d in data]
        if max(medians) / max(min(medians), 1e-12) > 4:
            lo, hi = min(float(d.min()) for d in data), max(float(d.max()) for d in data)
            _log_x(ax, decades=math.log10(hi / lo) if lo > 0 else 9.0)
        ax.set_xlabel("latency per inference (ms); black: median, red: p99; the slowest 0.5 % left out")
        ax.set_title("Latency distribution")
        return to_png(fig)


def _clip_tail(values: np.ndarray, keep: float = 99.5) -> np.ndarray:
    """Drop the slowest few calls: a single spike otherwise squeezes the violin into a line."""
    if values.size < 20:
        return values
    return values[values <= np.percentile(values, keep)]


def _log_x(ax: Any, decades: float = 3.0) -> None:
    """Log x axis with plain numbers; 1-2-5 ticks unless the span is too wide for them."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _thin(values: np.ndarray, limit: int = 4000) -> np.ndarray:
    """Every k-th sample when there are many: the shape of a violin needs no more."""
    if values.size <= limit:
        return values
    return np.sort(values)[:: math.ceil(values.size / limit)]


@deferrable
def histograms(series: list[dict[str, Any]]) -> bytes:
    """Small multiples: one latency histogram per runtime, with mean and p99 marked."""
    n = len(series)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    with plot_style():
        fig = new_figure(min(2.4 * cols + 0.6, 10.5), 1.9 * rows + 0.2, layout=None)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.5 / (1.9 * rows + 0.2), top=1 - 0.3 / (1.9 * rows + 0.2),
                            wspace=0.12, hspace=0.75)
        for i, s in enumerate(series):
            ax = fig.add_subplot(rows, cols, i + 1)
            values = np.asarray(s["values"], dtype=float)
            hi = float(np.percentile(values, 99.5))
            lo = float(values.min())
            if lo > 0 and hi / lo > 20:  # slow outliers would squash the body into one bar
                ax.hist(np.clip(values, None, hi), bins=np.geomspace(lo, hi, 41), color=s["color"], alpha=0.8,
                        histtype="stepfilled")
                _log_x(ax, decades=math.log10(hi / lo) * 1.6)
            else:
                ax.hist(np.clip(values, None, hi), bins=40, color=s["color"], alpha=0.8, histtype="stepfilled")
            title = s["label"]
            mean = float(values.mean())
            if mean <= hi:
                ax.axvline(mean, color="#222", linewidth=1)
            else:
                title += f"\n(mean {mean:.3g} ms: off the scale)"
            ax.axvline(float(np.percentile(values, 99)), color="#c0392b", linewidth=1, linestyle="--")
            if hi > lo:
                ax.set_xlim(lo if lo > 0 else None, hi)
            ax.set_title(title, fontsize=9)
            ax.set_yticks([])
            ax.set_xlabel("ms", fontsize=8)
        return to_png(fig)


@deferrable
def latency_over_calls(series: list[dict[str, Any]]) -> bytes:
    """Each runtime's latency call after call (a running median over a few calls, raw calls as dots):
    shows warm-up, drift, throttling and bursts of interference that a histogram hides.

    A series may carry `count`, the calls there were when `values` keeps one per stretch of
    count/len(values) calls (a thinned long run): each value is then drawn at its stretch's middle.
    """
    with plot_style():
        fig = new_figure(9.0, 3.0, legend=[s["label"] for s in series])
        ax = fig.add_subplot()
        medians = []
        for s in series:
            values = np.asarray(s["values"], dtype=float)
            scale = max(float(s.get("count") or values.size), values.size) / max(values.size, 1)
            window = max(1, values.size // 60)
            n = values.size // window * window
            blocks = values[:n].reshape(-1, window)
            x = ((np.arange(blocks.shape[0]) * window + window / 2) + 0.5) * scale - 0.5
            ax.plot((np.arange(values.size) + 0.5) * scale - 0.5, values, linestyle="", marker=".", markersize=1.5,
                    alpha=0.25, color=s["color"])
            ax.plot(x, np.median(blocks, axis=1), color=s["color"], linewidth=1.4, label=s["label"])
            medians.append(float(np.median(values)))
        positive = [m for m in medians if m > 0]
        if positive and (max(positive) / min(positive) > 8 or any(
                np.percentile(np.asarray(s["values"], float), 99.5) > 8 * np.median(s["values"]) for s in series)):
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("call (after warm-up)")
        ax.set_ylabel("ms")
        ax.set_title("Latency call after call (line: running median)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return to_png(fig)


@deferrable
def timelines(panels: list[tuple[str, str, list[dict[str, Any]]]]) -> bytes:
    """Stacked panels (title, y label, series of {label, t, values, color}) sharing the time axis."""
    with plot_style():
        fig = new_figure(7.2, 2.1 * len(panels) + 0.3, legend=[s["label"] for s in panels[0][2]], grid=(len(panels), 1))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (title, ylabel, series) in zip(axes, panels, strict=True):
            for s in series:
                few = len(s["t"]) < 4  # a short run gives a sample or two: show them as dots
                ax.plot(s["t"], s["values"], color=s["color"], linewidth=1.3, label=s["label"],
                        marker="o" if few else None, markersize=4)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        axes[-1].set_xlabel("seconds since the runtime started")
        return to_png(fig)


# --- quality --------------------------------------------------------------------------------------
@deferrable
def confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> bytes:
    """Counts and row-normalised (sensitivity on the diagonal) side by side."""
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    names = list(class_names) if len(class_names) == n else [str(i) for i in range(n)]
    totals = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    side = min(max(2.2, 0.24 * n + 0.8), 4.4)
    annotate = n <= 15
    with plot_style():
        fig = new_figure(2 * side + 0.4, side + 0.2, layout=None)
        longest = max(len(s) for s in names) if n <= 25 else 0
        margin = min(0.4, 0.11 + 0.018 * longest)  # room for the class names under and beside each matrix
        fig.subplots_adjust(left=margin * 0.5 + 0.03, right=0.99, bottom=margin, top=0.93, wspace=0.1 + margin * 0.5)
        for i, (values, title, fmt) in enumerate(((m, "counts", "{:.0f}"), (norm, "normalised by true class", "{:.2f}"))):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.grid(False)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ticks = list(range(n))
            labels = names if n <= 25 else [""] * n
            ax.set_xticks(ticks, labels, rotation=90 if max(len(s) for s in names) > 3 else 0)
            ax.set_yticks(ticks, labels)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            if annotate:
                for r in range(n):
                    for c in range(n):
                        if values[r, c] == 0 and r != c:
                            continue
                        ax.text(c, r, fmt.format(values[r, c]), ha="center", va="center", fontsize=7,
                                color="white" if norm[r, c] > 0.6 else "#222")
        return to_png(fig)


@deferrable
def pr_curves(curves: dict[str, dict[str, list[float]]], ap: dict[str, float]) -> bytes:
    """Precision against recall per class at IoU 0.5, with each class's AP in the legend."""
    with plot_style():
        fig = new_figure(4.2, 3.2)
        ax = fig.add_subplot()
        for name, curve in curves.items():
            recall, precision = curve.get("recall", []), curve.get("precision", [])
            if len(recall) and len(recall) == len(precision):
                label = f"{name} (AP {ap[name]:.3f})" if name in ap else name
                ax.plot(recall, precision, linewidth=1.4, label=label)
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(loc="lower left", frameon=False)
        return to_png(fig)


@deferrable
def map_vs_threshold(series: list[dict[str, Any]]) -> bytes:
    """mAP@0.5 against the score threshold per runtime and, when the file has it, F1 (with precision
    and recall) beside it; the dot marks each runtime's operating threshold (`best`)."""
    with_f1 = [s for s in series if s.get("f1")]
    with plot_style():
        fig = new_figure(9.6 if with_f1 else 7.2, 3.2, legend=() if with_f1 else [s["label"] for s in series],
                      grid=(1, 2 if with_f1 else 1))
        axes = fig.subplots(1, 2 if with_f1 else 1, squeeze=False)[0]
        for s in series:
            thr, values = np.asarray(s["threshold"], float), np.asarray(s["map50"], float)
            best = int(np.argmin(np.abs(thr - s["best"]))) if s.get("best") is not None else int(np.argmax(values))
            axes[0].plot(thr, values * 100, color=s["color"], linewidth=1.5, label=s["label"])
            axes[0].plot([thr[best]], [values[best] * 100], marker="o", color=s["color"])
        axes[0].set_xlabel("score threshold")
        axes[0].set_ylabel("mAP@0.5 (%)")
        axes[0].set_title("mAP@0.5 against the score threshold")
        if with_f1:
            ax = axes[1]
            for s in with_f1:
                thr = np.asarray(s["threshold"], float)
                f1 = np.asarray(s["f1"], float)
                best = int(np.argmin(np.abs(thr - s["best"]))) if s.get("best") is not None else int(np.argmax(f1))
                ax.plot(thr, f1 * 100, color=s["color"], linewidth=1.6, label=f"{s['label']} F1")
                ax.plot([thr[best]], [f1[best] * 100], marker="o", color=s["color"])
                if len(with_f1) == 1:  # one runtime (or all alike): precision and recall fit too
                    for key, style in (("precision", "--"), ("recall", ":")):
                        if s.get(key):
                            ax.plot(thr, np.asarray(s[key], float) * 100, color=s["color"], linestyle=style,
                                    linewidth=1.1, label=key)
            ax.set_xlabel("score threshold")
            ax.set_ylabel("%")
            ax.set_title("F1 at IoU 0.5: the operating point")
            ax.set_ylim(0, 105)
            ax.legend(loc="lower left", frameon=False)
        else:
            axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if with_f1 and len(series) > 1:
            axes[0].legend(loc="lower left", frameon=False)
        return to_png(fig)


@deferrable
def grouped_bars(groups: list[str], series: list[dict[str, Any]], ylabel: str, title: str) -> bytes:
    """Bars per group (e.g. class), one bar per series (runtime) in its colour."""
    n = max(len(series), 1)
    width = 0.8 / n
    with plot_style():
        fig = new_figure(min(1.0 + 0.35 * len(groups) * n + 1.5, 10.5), 3.0, legend=[s["label"] for s in series])
        ax = fig.add_subplot()
        x = np.arange(len(groups))
        for i, s in enumerate(series):
            ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(s["values"], float) * 100, width,
                   color=s["color"], label=s["label"])
        ax.set_xticks(x, groups)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 105)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return to_png(fig)
