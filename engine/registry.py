"""Finds node kinds: the built-ins under `nodes/`, and third-party ones from the entry-point group
`heiti.nodes` (an entry point may name a module, a Node class, or a list of Node classes).

Importing a node module must stay cheap: node modules import heavy frameworks inside `run`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import threading
from types import ModuleType
from typing import Any

from heiti.engine.node import Node
from heiti.engine.plugin_scan import may_declare

ENTRY_POINT_GROUP = "heiti.nodes"


class UnknownKind(KeyError):
    pass


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, type[Node]] = {}
        #: problems met while discovering (a broken plug-in must not break the rest)
        self.load_errors: list[str] = []

    def register(self, cls: type[Node]) -> type[Node]:
        """Add a node class; usable as a decorator. A kind registered twice must be the same class."""
        if not (inspect.isclass(cls) and issubclass(cls, Node)) or not cls.kind:
            raise TypeError(f"{cls!r} is not a Node class with a kind")
        existing = self._kinds.get(cls.kind)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"node kind {cls.kind!r} is defined twice: {existing.__module__} and {cls.__module__}")
        self._kinds[cls.kind] = cls
        return cls

    def unregister(self, kind: str) -> None:
        self._kinds.pop(kind, None)

    def register_module(self, module: ModuleType) -> int:
        count = 0
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Node) and obj.kind and obj.__module__ == module.__name__:
                self.register(obj)
                count += 1
        return count

    def get(self, kind: str) -> type[Node]:
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownKind(kind) from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def classes(self) -> list[type[Node]]:
        return [self._kinds[k] for k in self.kinds()]

    # --- discovery ------------------------------------------------------------------------------
    def load_builtins(self, package: str = "heiti.nodes") -> None:
        """Register the kinds of every module under `package`.

        A package may name the modules that hold its kinds in `NODE_MODULES`; only those are
        imported then, so listing does not pay for a package's machinery (device server,
        protocol, back-ends). Without it, every module is imported.
        """
        try:
            pkg = importlib.import_module(package)
        except Exception as err:  # noqa: BLE001 - reported, not fatal
            self.load_errors.append(f"{package}: {type(err).__name__}: {err}")
            return
        self.register_module(pkg)
        declared = getattr(pkg, "NODE_MODULES", None)
        if declared is not None:  # a declared name may be a subpackage, which declares its own
            names = [(f"{package}.{name}", _is_package(f"{package}.{name}")) for name in declared]
        else:
            names = [(f"{package}.{info.name}", info.ispkg) for info in pkgutil.iter_modules(pkg.__path__)
                     if not info.name.startswith("_")]
        for name, is_package in names:
            if is_package:
                self.load_builtins(name)
                continue
            try:
                self.register_module(importlib.import_module(name))
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                self.load_errors.append(f"{name}: {type(err).__name__}: {err}")

    def load_entry_points(self) -> None:
        if not may_declare(ENTRY_POINT_GROUP):  # nothing to load: spare importlib.metadata (~65 ms)
            return
        import importlib.metadata

        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                self._register_object(ep.load())
            except Exception as err:  # noqa: BLE001
                self.load_errors.append(f"entry point {ep.name} ({ep.value}): {type(err).__name__}: {err}")

    def load_env_plugins(self, variable: str = "HEITI_PLUGINS") -> None:
        """Modules named in $HEITI_PLUGINS (comma-separated): node kinds without packaging."""
        import os

        for name in filter(None, (n.strip() for n in os.environ.get(variable, "").split(","))):
            try:
                self.register_module(importlib.import_module(name))
            except Exception as err:  # noqa: BLE001
                self.load_errors.append(f"{variable} module {name}: {type(err).__name__}: {err}")

    def _register_object(self, obj: Any) -> None:
        if isinstance(obj, ModuleType):
            self.register_module(obj)
        elif inspect.isclass(obj):
            self.register(obj)
        elif isinstance(obj, list | tuple):
            for item in obj:
                self._register_object(item)
        elif callable(obj):
            self._register_object(obj())
        else:
            raise TypeError(f"cannot register {obj!r}")


def _is_package(name: str) -> bool:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.submodule_search_locations is not None


_default: Registry | None = None
_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry with built-ins and plug-ins, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            registry = Registry()
            registry.load_builtins()
            registry.load_entry_points()
            registry.load_env_plugins()
            _default = registry
        return _default
