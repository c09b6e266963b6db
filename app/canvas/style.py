"""Colours and sizes shared by the canvas items: one place to tune the look."""

from __future__ import annotations

import colorsys
import hashlib

from PySide6.QtGui import QColor

GRID = 20
NODE_WIDTH = 190
HEADER_HEIGHT = 34
PORT_SPACING = 22
PORT_RADIUS = 6
NODE_RADIUS = 8

CANVAS_BG = QColor("#1e2127")
GRID_MINOR = QColor("#262a31")
GRID_MAJOR = QColor("#2e333b")
NODE_BODY = QColor("#2d323b")
NODE_HEADER = QColor("#373d48")
NODE_BORDER = QColor("#4a515e")
NODE_SELECTED = QColor("#f0b429")
TEXT = QColor("#e6e9ef")
TEXT_DIM = QColor("#9aa3b2")
INVALID = QColor("#e5484d")
WARNING = QColor("#f5a623")
TEMP_WIRE = QColor("#d0d6e0")
COMPATIBLE = QColor("#5ee08a")

STATE_COLOURS = {
    "idle": None,
    "pending": QColor("#8a94a6"),
    "running": QColor("#3e9bff"),
    "cached": QColor("#2fb5b5"),
    "done": QColor("#46c46e"),
    "failed": QColor("#e5484d"),
    "skipped": QColor("#6b7280"),
    "cancelled": QColor("#b36bd4"),
}

CATEGORY_COLOURS = {
    "Datasets": QColor("#3d8bd4"),
    "Models": QColor("#9b59d0"),
    "Training": QColor("#d9822b"),
    "Train": QColor("#d9822b"),
    "Optimizers": QColor("#2fa37c"),
    "Converters": QColor("#2fa37c"),
    "Compilers": QColor("#1f9fb4"),
    "Runtimes": QColor("#d4475a"),
    "Targets": QColor("#c9a227"),
    "Reports": QColor("#5a9e3d"),
    "Test": QColor("#6c7a89"),
}

#: formats that are not a runtime's model format; model formats take the colour a node class
#: declares for them (`RuntimeNode.colours`), so a plug-in runtime brings its own
FORMAT_COLOURS = {
    "classification": QColor("#46c46e"),
    "detection": QColor("#8bd346"),
    "local": QColor("#c9a227"),
    "tcp": QColor("#d6b94a"),
    "serial": QColor("#b08c1e"),
    "html": QColor("#7fd1c7"),
}

TYPE_COLOURS = {
    "DatasetHandle": QColor("#46c46e"),
    "ModelArtifact": QColor("#9aa7ff"),
    "Measurements": QColor("#e86fb0"),
    "TargetHandle": QColor("#c9a227"),
    "ReportArtifact": QColor("#7fd1c7"),
    "Value": QColor("#c5ccd6"),
    "Payload": QColor("#c5ccd6"),
}


def _hashed_colour(text: str) -> QColor:
    digest = hashlib.md5(text.encode("utf-8")).digest()  # noqa: S324 - a colour, not security
    r, g, b = colorsys.hls_to_rgb(digest[0] / 255.0, 0.62, 0.55)
    return QColor.fromRgbF(r, g, b)


def _declared_colour(fmt: str) -> QColor | None:
    """The colour a registered node class declares for this format (`colours`, e.g. a runtime's)."""
    from heiti.engine.registry import default_registry

    for cls in default_registry().classes():
        colour = (getattr(cls, "colours", None) or {}).get(fmt)
        if colour:
            return QColor(colour)
    return None


def format_colour(fmt: str | None, type_name: str = "Payload") -> QColor:
    """The colour of a wire or port: by format when known, else by payload type."""
    if fmt:
        return FORMAT_COLOURS.get(fmt) or _declared_colour(fmt) or _hashed_colour(fmt)
    return TYPE_COLOURS.get(type_name) or _hashed_colour(type_name)


def category_colour(category: str) -> QColor:
    return CATEGORY_COLOURS.get(category) or _hashed_colour(category)
