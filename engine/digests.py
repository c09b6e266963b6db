"""Remembered file digests, so an unchanged input file is not read again on every run.

A cache key needs the sha256 of every file a path param names; re-reading a 120 MB dataset
and a 15 MB model costs more than the rest of a cached re-run. A digest is remembered under the
file's identity and change time (device, inode, size, mtime, ctime). Any write through the file
system moves ctime, and user space cannot set ctime back, so a changed file never matches.

The kernel stamps ctime from a coarse clock (one tick is a few milliseconds): a file rewritten
twice within one tick keeps its ctime. So, as git does with "racily clean" files, a digest is
remembered only for a file whose ctime is at least STABLE_NS old when it is read; a write after
that moves ctime to a later tick.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from heiti.engine.files import file_sha256

#: a file changed more recently than this is hashed but not remembered (the racy window)
STABLE_NS = 2_000_000_000
#: entries kept in the file; the oldest go first
MAX_ENTRIES = 4096


def identity(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


class DigestMemo:
    """sha256 of files by identity, kept in a small JSON file (`path`), or in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._known: dict[str, str] = self._load()
        self._dirty = False

    def _load(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            with open(self.path, "rb") as handle:
                data = json.loads(handle.read(1 << 20))  # a memo larger than 1 MiB is not ours
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items()
                if isinstance(k, str) and isinstance(v, str) and len(v) == 64}

    def sha256(self, path: Path | str, info: os.stat_result) -> str:
        """The file's sha256: remembered when its identity is known, else read (and remembered
        when the file is stable and did not change while it was read)."""
        key = identity(info)
        known = self._known.get(key)
        if known is not None:
            return known
        digest = file_sha256(path)
        after = os.stat(path)
        if identity(after) == key and time.time_ns() - info.st_ctime_ns >= STABLE_NS:
            self._known[key] = digest
            self._dirty = True
        return digest

    def save(self) -> None:
        """Write the memo atomically; losing it (or a race with another run) only costs a re-read."""
        if self.path is None or not self._dirty:
            return
        items = list(self._known.items())[-MAX_ENTRIES:]
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".digests.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(dict(items), handle)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
