"""Report figures collected while the sections are built, then drawn all at once.

Within `deferred()` the plot functions (nodes.reports.plots, marked `deferrable`) called by this
thread return `Pending` placeholders and draw nothing; `draw_pending` hands the calls, costliest
first, to nodes.reports.drawing, which draws them in this process and forked helpers.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Pending(bytes):
    """A figure not drawn yet (while `deferred()` collects the plot calls): empty bytes until
    `deferred` hands each its PNG; `render` writes the figures only after that."""

    call: Callable[[], bytes]


_local = threading.local()  # what this thread collects: another thread's plots are drawn at once


def _collecting() -> list[list[Pending]]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack  # type: ignore[no-any-return]


@contextlib.contextmanager
def deferred() -> Iterator[list[Pending]]:
    """Within this block the plot functions called by this thread return `Pending` placeholders
    and draw nothing; the list they fill is drawn at once (nodes.reports.drawing) by `draw_pending`."""
    pending: list[Pending] = []
    _collecting().append(pending)
    try:
        yield pending
    finally:
        _collecting().remove(pending)


#: rough cost of a figure, in hundredths of a second of one core (measured on the demo report and
#: the MobileNetV2 flow's): (fixed, per item) where an item is a series, a panel, a graph node or a
#: class. The costly ones are handed out first, so that no process is left drawing a big one alone
#: at the end.
_COST = {"bubble_chart": (20, 1), "confusion": (12, 0.1), "timelines": (0.5, 6.7), "latency_over_calls": (8.5, 1),
         "violins": (5, 1.5), "histograms": (2, 3.5), "graph_picture": (3, 0.8), "pr_curves": (8, 1),
         "map_vs_threshold": (10, 1), "grouped_bars": (8, 1)}


def cost(call: functools.partial) -> float:
    """A plot call's rough cost (see _COST)."""
    fixed, each = _COST.get(call.func.__name__, (10, 1))
    items = call.args[0] if call.args else ()
    if call.func.__name__ == "confusion":  # the cells, each annotated
        items = [cell for row in items for cell in row]
    try:
        return fixed + each * len(items)
    except TypeError:
        return fixed


def draw_pending(pending: list[Pending]) -> dict[int, bytes | None]:
    """PNG bytes of each pending figure (None if it failed), keyed by the placeholder's id()."""
    from heiti.nodes.reports.drawing import draw_all

    order = sorted(pending, key=lambda p: -cost(p.call))  # stable: page order within a cost
    return {id(p): png for p, png in zip(order, draw_all([p.call for p in order]), strict=True)}


def deferrable(plot: Callable[..., bytes]) -> Callable[..., bytes]:
    """A plot function that, inside `deferred()`, returns a placeholder and draws later."""

    @functools.wraps(plot)
    def maybe_later(*args: Any, **kwargs: Any) -> bytes:
        stack = _collecting()
        if not stack:
            return plot(*args, **kwargs)
        placeholder = Pending()
        placeholder.call = functools.partial(plot, *args, **kwargs)
        stack[-1].append(placeholder)
        return placeholder

    return maybe_later
