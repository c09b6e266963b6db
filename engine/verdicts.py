"""Graph structures that validated before, remembered beside the cache.

`validate` is the only judge of a graph. Its structural checks — ports, wires, types, formats,
cycles, the run order — use networkx, whose import alone takes ~0.25 s, a third of a cached
re-run. They depend on nothing but the graph and the node kinds' code, so for a graph that passed
them the verdict (its node order) is kept here, keyed by the graph as resolved (nodes, params,
wires) and by the identity of the kinds' code (each kind's module file, and the engine's rule
modules). A re-run of the same graph with the same kinds re-checks everything else — params, the
files that path params name and what the kinds read from them — and takes the order from here.
Only passing verdicts are kept; any change to the graph or to a kind's code is another key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heiti.engine.graph import Graph
    from heiti.engine.registry import Registry

#: verdicts kept (the most recent); each is one graph's node order
MAX_VERDICTS = 256
#: the engine modules whose rules the structural checks apply
RULE_MODULES = ("heiti.engine.validate", "heiti.engine.wiring", "heiti.engine.formats", "heiti.engine.node",
                "heiti.engine.payloads")


def _file_identity(module: str, path: str | None = None) -> list[Any]:
    path = path or getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return [module, None]
    try:
        info = os.stat(path)
    except OSError:
        return [module, None]
    return [module, path, info.st_size, info.st_mtime_ns]


def code_identity(registry: Registry) -> str:
    """The node kinds (kind, version, class) and the files their code and the rules come from;
    a kind the registry knows from its kind index counts by its module's file, unimported."""
    kinds = registry.kind_records()
    modules = sorted({module for _kind, _version, module, _name in kinds} | set(RULE_MODULES))
    text = json.dumps([kinds, [_file_identity(m, registry.module_files.get(m)) for m in modules]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def graph_key(graph: Graph, registry: Registry) -> str:
    structure = {"nodes": [[n.id, n.kind, n.version, n.params] for n in graph.nodes],
                 "edges": [[list(e.src), list(e.dst)] for e in graph.edges]}
    text = json.dumps([structure, code_identity(registry)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Verdicts:
    """The passing verdicts in one JSON file; unreadable or odd content counts as none."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: dict[str, list[str]] | None = None

    def _load(self) -> dict[str, list[str]]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            self._data = {k: v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}
        return self._data

    def order(self, key: str, node_ids: list[str]) -> list[str] | None:
        """The remembered order, if it is one of exactly these nodes."""
        order = self._load().get(key)
        if order is None or sorted(order) != sorted(node_ids):
            return None
        return list(order)

    def remember(self, key: str, order: list[str]) -> None:
        """Keep a passing verdict (atomically; a folder that cannot be written keeps none)."""
        data = self._load()
        if data.get(key) == order:
            return
        data.pop(key, None)
        data[key] = order
        while len(data) > MAX_VERDICTS:
            data.pop(next(iter(data)))
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".verdicts.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
