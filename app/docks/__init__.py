"""Dock widgets around the canvas: run log, live charts, comparison table."""
