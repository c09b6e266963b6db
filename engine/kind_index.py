"""Which node kinds each built-in node module defines, remembered between commands.

A command needs the classes of the kinds its graph uses, not all 30-odd: importing every node
module costs ~45 ms, a tenth of a cached re-run. The first command that imports a module notes
the kinds it defines (kind, class name, version), with the module file's size and modification
time; a later command whose module file is unchanged knows those kinds without importing it, and
the registry imports the module the first time one of its classes is asked for
(engine.registry). A module file that changed, or that this index has not seen, is imported.

Kept in the user's cache folder ($XDG_CACHE_HOME/heiti, else ~/.cache/heiti; $HEITI_KIND_INDEX
names another file, "" turns it off). An index that cannot be read or written is no index.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1


def default_path() -> Path | None:
    chosen = os.environ.get("HEITI_KIND_INDEX")
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "heiti" / "kinds.json"


def _stamp(origin: str) -> list[Any] | None:
    try:
        info = os.stat(origin)
    except OSError:
        return None
    return [origin, info.st_size, info.st_mtime_ns]


class KindIndex:
    """{module: {"file": [origin, size, mtime_ns], "kinds": [[kind, qualname, version], ...]}}."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._modules: dict[str, dict[str, Any]] = self._load()
        self._dirty = False

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("python") != sys.version:
            return {}
        modules = data.get("modules")
        return modules if isinstance(modules, dict) else {}

    def kinds(self, module: str, origin: str | None) -> list[tuple[str, str, int]] | None:
        """The kinds noted for `module`, if its file is the one noted; None otherwise."""
        entry = self._modules.get(module)
        if origin is None or not isinstance(entry, dict) or entry.get("file") != _stamp(origin):
            return None
        try:
            return [(str(kind), str(qualname), int(version)) for kind, qualname, version in entry["kinds"]]
        except (KeyError, TypeError, ValueError):
            return None

    def note(self, module: str, origin: str | None, classes: list[Any]) -> None:
        stamp = _stamp(origin) if origin else None
        if stamp is None or self.path is None:
            return
        kinds = [[cls.kind, cls.__qualname__, int(cls.version)] for cls in classes]
        entry = {"file": stamp, "kinds": kinds}
        if self._modules.get(module) != entry:
            self._modules[module] = entry
            self._dirty = True

    def save(self) -> None:
        """Write the index if it changed (atomically; a folder that cannot be written keeps none)."""
        if not self._dirty or self.path is None:
            return
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".kinds.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"format": FORMAT, "python": sys.version, "modules": self._modules}, out)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def module_origin(name: str) -> str | None:
    """The file a module would be imported from (its parent packages are imported to find it)."""
    import importlib.util

    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None
