"""Entry point of the desktop editor: `heiti` or `heiti edit [FILE]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def build_window(args: argparse.Namespace | None = None) -> Any:
    """The main window with the installed node kinds, the file from the command line opened."""
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme
    from heiti.engine.registry import default_registry
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Heiti editor")
    app.setOrganizationName("Heiti")
    apply_theme(app)
    registry = default_registry()
    window = MainWindow(registry)
    window.restore_layout()
    window.show()
    graph = getattr(args, "graph", None) if args is not None else None
    if graph:
        window.files.open(Path(graph))
    else:
        window.view.fit_all()
    window.files.check_recovery()
    for problem in registry.load_errors:
        window.log_dock.add("", "warning", f"node kinds: {problem}")
    return window


def main(args: argparse.Namespace | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    window = build_window(args)
    code = QApplication.instance().exec()
    del window
    return int(code)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="heiti-edit")
    parser.add_argument("graph", nargs="?")
    sys.exit(main(parser.parse_args()))
