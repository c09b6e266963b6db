"""Copies of the files a cached re-run restores, made while `heiti run` is still starting.

A re-run that the cache serves whole (engine.run_hints) copies every node's files into the new
run folder: 150 MB and ~0.1 s for the Keras MobileNetV2 flow, one sixth of the re-run. Before
that the command's main thread spends ~0.4 s importing Heiti and loading the graph, on one core.
When the hint names the cache keys of the graph's last run, a thread copies those entries' files
into the new run folder during that time, and notes each copy's identity (inode, size, times)
once the file-system clock has moved past it (engine.copying.tick_past).

The executor still decides everything: it verifies each entry as always, and keeps a node's
copies only when they are exactly that entry's files, unwritten since (ArtifactCache.restore);
anything else is cleared and copied again. The thread copies only into a run folder it creates,
and the executor waits for a node's copies before it touches that node's folder. If the run does
not start (an invalid graph), the folder is removed again.

Standard library only: it runs beside the main thread's imports.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from heiti.engine.copying import copy_tree, tick_past
from heiti.engine.digests import identity
from heiti.engine.paths import run_folder


class Prefetch:
    """Copies each node's cached files into `out_dir/nodes/<node>` on a thread, in `keys` order."""

    def __init__(self, cache_root: Path, out_dir: Path, keys: dict[str, str]) -> None:
        self.cache_root = Path(cache_root)
        self.out_dir = Path(out_dir)
        self.keys = dict(keys)
        self._copies: dict[str, dict[str, str]] = {}
        self._ready = {node: threading.Event() for node in self.keys}
        self.out_dir.mkdir(parents=True)  # its own folder: raises if it exists
        self._thread = threading.Thread(target=self._work, name="heiti-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        for node, key in self.keys.items():
            try:
                self._copy(node, key)
            except OSError:
                pass  # no copies for this node: the executor restores it the usual way
            finally:
                self._ready[node].set()

    def _copy(self, node: str, key: str) -> None:
        files = self.cache_root / key[:2] / key / "files"
        if not files.is_dir() or "/" in key or key.startswith("."):
            return
        workdir = self.out_dir / "nodes" / node
        workdir.mkdir(parents=True)
        written = copy_tree(files, workdir, 0o644)
        infos = [path.stat() for path in written]
        if tick_past(workdir, max((info.st_ctime_ns for info in infos), default=0)):
            self._copies[node] = {str(path.relative_to(workdir)): identity(path.stat()) for path in written}

    def take(self, node: str, key: str) -> dict[str, str] | None:
        """Wait until the thread is done with this node's folder; its copies if they are of `key`."""
        ready = self._ready.get(node)
        if ready is None:
            return None
        ready.wait()
        return self._copies.get(node) if self.keys[node] == key else None

    def discard(self) -> None:
        """The run did not start: wait for the thread, then remove the folder it made."""
        self._thread.join()
        shutil.rmtree(self.out_dir, ignore_errors=True)


def start(cache_root: Path, graph_path: str | Path, out: str | None, keys: dict[str, str]) -> Prefetch | None:
    """A prefetch into the run's folder (`out`, or the one the run would name), when that folder
    does not exist yet; None otherwise."""
    if not keys:
        return None
    try:
        if out:
            folder = Path(out)
        else:
            name = json.loads(Path(graph_path).read_text(encoding="utf-8")).get("name", "untitled")
            folder = run_folder(name if isinstance(name, str) else "untitled")
        if folder.exists() or folder.is_symlink():
            return None
        return Prefetch(cache_root, folder, keys)
    except (OSError, ValueError, AttributeError):
        return None
