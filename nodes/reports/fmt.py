"""Number formatting shared by sections, so the same figure reads the same everywhere."""

from __future__ import annotations

import math

MINUS = "\u2212"


def ms(value: float | None) -> str:
    """Milliseconds with three significant figures: 0.412, 12.3, 140."""
    if value is None or not math.isfinite(value):
        return "—"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9833 -> '98.33 %'."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value * 100:.{digits}f} %"


def num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def points(delta: float | None) -> str:
    """A change of a fraction in percentage points, signed: '+0.12 pt', '−1.30 pt'."""
    if delta is None or not math.isfinite(delta):
        return "—"
    value = delta * 100
    if abs(value) < 0.005:
        return "±0.00 pt"
    sign = "+" if value > 0 else MINUS
    return f"{sign}{abs(value):.2f} pt"


def times(ratio: float | None) -> str:
    """A ratio as '3.20×'."""
    if ratio is None or not math.isfinite(ratio):
        return "—"
    return f"{ratio:.2f}×"


def ratio_text(ratio: float, more: str, less: str) -> str:
    """'3.20× faster' for ratio >= 1, '2.00× slower' for ratio < 1."""
    if ratio >= 1:
        return f"{ratio:.2f}× {more}"
    return f"{1 / ratio:.2f}× {less}"


def size(nbytes: int | float | None) -> str:
    if nbytes is None:
        return "—"
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"
