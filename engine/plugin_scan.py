"""Which entry-point groups the installed distributions declare, without importlib.metadata.

Importing importlib.metadata costs ~50 ms (it imports the email package) and listing entry points
another ~15 ms. Heiti looks up two groups in every process: its own plug-ins (`heiti.nodes`) and,
inside pydantic, pydantic's plug-ins (`pydantic`, on the first validator built). When no
distribution declares a group, which is the usual case, the answer is known from the section
headers of the few `entry_points.txt` files on sys.path (~3 ms), and importlib.metadata is left
for when there is something to load.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import types

_SECTION = re.compile(rb"^\s*\[([^\]]+)\]\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def declared_groups() -> frozenset[str] | None:
    """The groups named in any `*.dist-info`/`*.egg-info` entry_points.txt on sys.path; None when
    this scan cannot see every distribution (a zip on sys.path, a finder listing its own)."""
    from importlib.machinery import PathFinder

    if any(callable(getattr(finder, "find_distributions", None)) and finder is not PathFinder
           for finder in sys.meta_path):
        return None
    groups: set[str] = set()
    for entry in sys.path:
        folder = entry or "."
        if os.path.isfile(folder):
            return None
        try:
            listing = os.scandir(folder)
        except OSError:
            continue  # missing or unreadable: importlib.metadata finds nothing there either
        with listing:
            for item in listing:
                if not item.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    with open(os.path.join(item.path, "entry_points.txt"), "rb") as fh:
                        text = fh.read()
                except OSError:
                    continue
                groups.update(name.strip().decode("utf-8", "replace") for name in _SECTION.findall(text))
    return frozenset(groups)


def may_declare(group: str) -> bool:
    """False only when no installed distribution declares entry points in `group`."""
    groups = declared_groups()
    return groups is None or group in groups


def spare_pydantic_plugin_lookup() -> None:
    """When no distribution declares pydantic plug-ins, answer pydantic's plug-in lookup with the
    same empty list, without its importlib.metadata scan (pydantic is pinned; its lookup is
    `pydantic.plugin._loader.get_plugins`, imported on the first validator built)."""
    name = "pydantic.plugin._loader"
    if name in sys.modules or may_declare("pydantic"):
        return
    stand_in = types.ModuleType(name, "No pydantic plug-ins are installed (heiti.engine.plugin_scan).")
    stand_in.PYDANTIC_ENTRY_POINT_GROUP = "pydantic"  # type: ignore[attr-defined]
    stand_in.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[name] = stand_in
