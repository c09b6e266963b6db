"""Autosave and crash recovery: the open graph is written to a recovery file now and then; a
recovery file left by an editor process that is gone means it crashed, and is offered back."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from heiti.engine.graph import Graph, atomic_write_text, load_graph
from PySide6.QtCore import QStandardPaths


def default_recovery_dir() -> Path:
    env = os.environ.get("HEITI_RECOVERY_DIR")
    if env:
        return Path(env)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation) or str(
        Path.home() / ".heiti")
    return Path(base) / "recovery"


@dataclass
class Orphan:
    """A recovery file whose editor is no longer running."""

    graph_path: Path
    meta_path: Path
    source: str | None
    saved_at: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))
        return f"{self.source or 'an unsaved graph'} (autosaved {when})"


class Recovery:
    def __init__(self, folder: Path | None = None, pid: int | None = None) -> None:
        self.folder = Path(folder) if folder else default_recovery_dir()
        self.pid = pid if pid is not None else os.getpid()

    @property
    def graph_path(self) -> Path:
        return self.folder / f"autosave-{self.pid}.json"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"autosave-{self.pid}.meta.json"

    def save(self, graph: Graph, source: Path | None) -> None:
        graph.save(self.graph_path)
        meta = {"pid": self.pid, "source": str(source) if source else None, "saved_at": time.time()}
        atomic_write_text(self.meta_path, json.dumps(meta))

    def discard(self) -> None:
        for path in (self.graph_path, self.meta_path):
            path.unlink(missing_ok=True)

    def orphans(self) -> list[Orphan]:
        found = []
        if not self.folder.is_dir():
            return found
        for meta_path in sorted(self.folder.glob("autosave-*.meta.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                pid = int(meta.get("pid", -1))
            except (OSError, ValueError, TypeError):
                continue
            graph_path = meta_path.with_name(meta_path.name.replace(".meta.json", ".json"))
            if pid == self.pid or (pid > 0 and psutil.pid_exists(pid)) or not graph_path.exists():
                continue
            found.append(Orphan(graph_path, meta_path, meta.get("source"), float(meta.get("saved_at", 0))))
        return found

    @staticmethod
    def load(orphan: Orphan) -> Graph:
        return load_graph(orphan.graph_path)

    @staticmethod
    def remove(orphan: Orphan) -> None:
        orphan.graph_path.unlink(missing_ok=True)
        orphan.meta_path.unlink(missing_ok=True)
