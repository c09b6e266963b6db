"""File handling for the main window: new, open, save (atomic), save as, recent files, examples,
autosave to a recovery file and the offer to restore one after a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from heiti.app.document import GraphDocument
from heiti.app.recovery import Recovery
from heiti.engine.graph import Graph, GraphLoadError
from heiti.engine.paths import rebase_graph_paths
from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import QMenu, QStatusBar


class MainWindow(Protocol):
    """What file handling needs of the main window (app/mainwindow.py's MainWindow, which owns
    this object: naming it here keeps the import one way)."""

    doc: GraphDocument
    view: Any  # CanvasView: fit_all()

    def ask_open_path(self) -> str | None: ...
    def ask_save_path(self) -> str | None: ...
    def ask_save_changes(self) -> str: ...
    def ask_restore(self, description: str) -> bool: ...
    def show_error(self, title: str, text: str) -> None: ...
    def statusBar(self) -> QStatusBar: ...  # noqa: N802 - Qt's name


EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "resources" / "graphs"
MAX_RECENT = 10
AUTOSAVE_MS = 30_000


class FileOps(QObject):
    def __init__(self, window: MainWindow, settings: QSettings, recovery: Recovery) -> None:
        super().__init__(window)  # type: ignore[arg-type] - the window is a QObject
        self.window = window
        self.doc = window.doc
        self.settings = settings
        self.recovery = recovery
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()

    # --- open / save ----------------------------------------------------------------------------
    def new(self) -> bool:
        if not self.maybe_save():
            return False
        self.doc.replace_graph(Graph(), None)
        self.recovery.discard()
        return True

    def open(self, path: str | Path | None = None) -> bool:
        if not self.maybe_save():
            return False
        if path is None:
            path = self.window.ask_open_path()
            if not path:
                return False
        try:
            self.doc.open(path)
        except GraphLoadError as err:
            self.window.show_error("Cannot open graph", f"{err.source}\n\n" + "\n".join(f"• {p}" for p in err.problems))
            return False
        self.add_recent(Path(path))
        self.recovery.discard()
        self.window.view.fit_all()
        self.window.statusBar().showMessage(f"opened {path}", 5000)
        return True

    def open_example(self, path: Path) -> bool:
        """Examples open as untitled copies, so saving never overwrites the bundled file."""
        if not self.open(path):
            return False
        self.doc.set_path(None)
        return True

    def save(self) -> bool:
        if self.doc.path is None:
            return self.save_as()
        return self._write(self.doc.path)

    def save_as(self) -> bool:
        path = self.window.ask_save_path()
        if not path:
            return False
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_suffix(".json")
        return self._write(path)

    def _write(self, path: Path) -> bool:
        # path params: relative when under the graph's folder, still naming the same files
        before = ({s.id: dict(s.params) for s in self.doc.graph.nodes}, self.doc.graph.base_dir)
        rebase_graph_paths(self.doc.graph, self.doc.registry, Path(path).parent)
        try:
            self.doc.save(path)
        except OSError as err:
            for spec in self.doc.graph.nodes:
                spec.params = before[0].get(spec.id, spec.params)
            self.doc.graph.base_dir = before[1]
            self.window.show_error("Cannot save", f"{path}: {err.strerror or err}")
            return False
        self.add_recent(path)
        self.recovery.discard()
        self.window.statusBar().showMessage(f"saved {path}", 5000)
        return True

    def maybe_save(self) -> bool:
        """Ask before losing unsaved changes; False means the user cancelled."""
        if not self.doc.modified:
            return True
        answer = self.window.ask_save_changes()
        if answer == "save":
            return self.save()
        return answer == "discard"

    # --- recent files and examples --------------------------------------------------------------
    def recent(self) -> list[str]:
        value = self.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: Path) -> None:
        text = str(Path(path).resolve())
        items = [text] + [p for p in self.recent() if p != text]
        self.settings.setValue("recent_files", items[:MAX_RECENT])
        self.settings.sync()

    def fill_recent_menu(self, menu: QMenu) -> None:
        menu.clear()
        items = self.recent()
        for path in items:
            action = menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.setEnabled(Path(path).exists())
            action.triggered.connect(lambda _=False, p=path: self.open(p))
        if not items:
            menu.addAction("(none)").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear list").triggered.connect(lambda: self.settings.setValue("recent_files", []))

    @staticmethod
    def examples() -> list[Path]:
        return sorted(EXAMPLES_DIR.glob("*.json")) if EXAMPLES_DIR.is_dir() else []

    def fill_examples_menu(self, menu: QMenu) -> None:
        menu.clear()
        examples = self.examples()
        for path in examples:
            action = menu.addAction(path.stem.replace("_", " "))
            action.setStatusTip(str(path))
            action.triggered.connect(lambda _=False, p=path: self.open_example(p))
        if not examples:
            menu.addAction(f"(no graphs in {EXAMPLES_DIR})").setEnabled(False)

    # --- autosave and recovery ------------------------------------------------------------------
    def autosave(self) -> bool:
        if not self.doc.modified:
            return False
        try:
            self.recovery.save(self.doc.graph, self.doc.path)
        except OSError as err:
            self.window.statusBar().showMessage(f"autosave failed: {err}", 5000)
            return False
        return True

    def check_recovery(self) -> bool:
        """Offer the newest graph left by a crashed editor; True if one was restored."""
        orphans = sorted(self.recovery.orphans(), key=lambda o: o.saved_at, reverse=True)
        if not orphans:
            return False
        newest = orphans[0]
        restored = False
        if self.window.ask_restore(newest.describe()):
            try:
                graph = self.recovery.load(newest)
            except GraphLoadError as err:
                self.window.show_error("Cannot restore", "\n".join(err.problems))
            else:
                graph.base_dir = Path(newest.source).parent if newest.source else None  # not the autosave folder
                self.doc.replace_graph(graph, Path(newest.source) if newest.source else None)
                self.doc.undo_stack.resetClean()
                self.window.view.fit_all()
                restored = True
                self.autosave()
        for orphan in orphans:
            self.recovery.remove(orphan)
        return restored
