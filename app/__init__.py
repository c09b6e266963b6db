"""Heiti's PySide6 desktop editor. Imports the engine; the engine never imports this package."""

from .qt_compat import protect_none

protect_none()
