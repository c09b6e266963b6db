"""A hint kept beside the cache: this graph file's last run left every node in the cache.

`heiti run` starts its fork server and an early worker first thing (engine/head_start.py), before
it knows anything about the graph: worth it when nodes will run, wasted when the cache serves the
whole run, and on two cores those processes' start slows such a re-run by ~0.1 s (a sixth of it).
After an ok run whose every node is in the cache, the graph file (its bytes and path) and the
identity of the files its path params name (size, mtime) are noted here; the next `heiti run` of
the same file, with those files as they were, skips the early start. It is a hint only: a node
that does need to run starts its workers when it needs them, and no result depends on it.
The hint also names each node's cache key, so that the files to restore can be copied while the
command still starts (engine.prefetch); the executor checks every entry and every copy as always.

Standard library only: it is read before the command imports anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE_NAME = "whole_runs.json"
#: graph files remembered (the most recent)
MAX_GRAPHS = 64
#: a graph file larger than this is not hashed for a hint
MAX_GRAPH_BYTES = 4 << 20


def _graph_id(graph_path: str | Path) -> str | None:
    path = Path(graph_path).absolute()
    try:
        if not path.is_file() or path.stat().st_size > MAX_GRAPH_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha256(str(path).encode() + b"\0" + data).hexdigest()


def _identity(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _read(cache_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        data = json.loads((Path(cache_dir) / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def whole_run_keys(cache_dir: str | Path, graph_path: str | Path) -> dict[str, str] | None:
    """The node ids and cache keys of this graph file's last run, if it left every node in this
    cache and its input files are unchanged; None otherwise."""
    key = _graph_id(graph_path)
    hint = _read(Path(cache_dir)).get(key) if key else None
    if not isinstance(hint, dict):
        return None
    files, keys = hint.get("files"), hint.get("keys")
    if not isinstance(files, dict) or not isinstance(keys, dict):
        return None  # a hint in an older form: none
    if not all(_identity(name) == seen for name, seen in files.items()):
        return None
    return {str(n): str(k) for n, k in keys.items()}


def served_whole(cache_dir: str | Path, graph_path: str | Path) -> bool:
    """Whether the last run of this graph file left every node in this cache, its inputs unchanged."""
    return whole_run_keys(cache_dir, graph_path) is not None


def note_run(cache_dir: str | Path, graph_path: str | Path, whole: bool, files: list[str],
             keys: dict[str, str] | None = None) -> None:
    """After a run: keep (whole) or drop (not whole) the hint for this graph file."""
    key = _graph_id(graph_path)
    if key is None:
        return
    data = _read(Path(cache_dir))
    data.pop(key, None)
    if whole:
        data[key] = {"files": {name: _identity(name) for name in sorted(set(files))}, "keys": dict(keys or {})}
    while len(data) > MAX_GRAPHS:
        data.pop(next(iter(data)))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".whole_runs.", dir=cache_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(tmp, Path(cache_dir) / FILE_NAME)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
