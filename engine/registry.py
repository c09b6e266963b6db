"""Finds node kinds: the built-ins under `nodes/`, and third-party ones from the entry-point group
`heiti.nodes` (an entry point may name a module, a Node class, or a list of Node classes).

Importing a node module must stay cheap: node modules import heavy frameworks inside `run`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
import threading
from types import ModuleType
from typing import Any

from heiti.engine.kind_index import KindIndex, default_path, module_origin
from heiti.engine.node import Node
from heiti.engine.plugin_scan import may_declare

ENTRY_POINT_GROUP = "heiti.nodes"


class UnknownKind(KeyError):
    pass


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, type[Node]] = {}
        #: kinds known from the kind index whose module is not imported yet: kind -> (module, class, version)
        self._lazy: dict[str, tuple[str, str, int]] = {}
        #: built-in node modules -> their file, imported or not (where the kinds' code is)
        self.module_files: dict[str, str] = {}
        #: problems met while discovering (a broken plug-in must not break the rest)
        self.load_errors: list[str] = []

    def register(self, cls: type[Node]) -> type[Node]:
        """Add a node class; usable as a decorator. A kind registered twice must be the same class."""
        if not (inspect.isclass(cls) and issubclass(cls, Node)) or not cls.kind:
            raise TypeError(f"{cls!r} is not a Node class with a kind")
        lazy = self._lazy.get(cls.kind)
        if lazy is not None and lazy[0] != cls.__module__:
            self._import_lazy(cls.kind)  # the kind's own module first: a clash is found as without the index
        self._lazy.pop(cls.kind, None)
        existing = self._kinds.get(cls.kind)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"node kind {cls.kind!r} is defined twice: {existing.__module__} and {cls.__module__}")
        self._kinds[cls.kind] = cls
        return cls

    def unregister(self, kind: str) -> None:
        self._kinds.pop(kind, None)
        self._lazy.pop(kind, None)

    def register_module(self, module: ModuleType) -> int:
        count = 0
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Node) and obj.kind and obj.__module__ == module.__name__:
                self.register(obj)
                count += 1
        return count

    def get(self, kind: str) -> type[Node]:
        if kind not in self._kinds and kind in self._lazy:
            self._import_lazy(kind)
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownKind(kind) from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds or kind in self._lazy

    def kinds(self) -> list[str]:
        return sorted({*self._kinds, *self._lazy})

    def classes(self) -> list[type[Node]]:
        for kind in list(self._lazy):
            if kind in self._lazy:
                self._import_lazy(kind)
        return [self._kinds[k] for k in self.kinds() if k in self._kinds]

    def kind_records(self) -> list[list[Any]]:
        """[kind, version, module, class name] of every kind, without importing a module for it."""
        records = [[c.kind, c.version, c.__module__, c.__qualname__] for c in self._kinds.values()]
        records += [[kind, version, module, qualname] for kind, (module, qualname, version) in self._lazy.items()]
        return sorted(records)

    def _import_lazy(self, kind: str) -> None:
        """Import the module the kind index says defines `kind` (its kinds register themselves)."""
        with _lock:
            entry = self._lazy.get(kind)
            if entry is None:
                return
            module = entry[0]
            try:
                self.register_module(importlib.import_module(module))
            except Exception as err:  # noqa: BLE001 - reported as loading would have, not fatal
                self.load_errors.append(f"{module}: {type(err).__name__}: {err}")
            for other, (name, _qualname, _version) in list(self._lazy.items()):
                if name == module:  # the index was wrong about this module: the kind is not there
                    del self._lazy[other]

    # --- discovery ------------------------------------------------------------------------------
    def load_builtins(self, package: str = "heiti.nodes", index: KindIndex | None = None) -> None:
        """Register the kinds of every module under `package`.

        A package may name the modules that hold its kinds in `NODE_MODULES`; only those are
        imported then, so listing does not pay for a package's machinery (device server,
        protocol, back-ends). Without it, every module is imported. With a kind `index`
        (engine.kind_index), a module whose file it knows unchanged is not imported until one of
        its kinds is asked for.
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
                self.load_builtins(name, index)
                continue
            origin = module_origin(name)
            if origin is not None:
                self.module_files[name] = origin
            known = index.kinds(name, origin) if index is not None and name not in sys.modules else None
            if known is not None and not any(kind in self for kind, _q, _v in known):
                for kind, qualname, version in known:
                    self._lazy[kind] = (name, qualname, version)
                continue
            try:
                module = importlib.import_module(name)
                self.register_module(module)
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                self.load_errors.append(f"{name}: {type(err).__name__}: {err}")
                continue
            if index is not None:
                index.note(name, origin, [c for c in self._kinds.values() if c.__module__ == name])

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
_lock = threading.RLock()


def default_registry() -> Registry:
    """The process-wide registry with built-ins and plug-ins, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            registry = Registry()
            index = KindIndex(default_path())
            registry.load_builtins(index=index)
            index.save()
            registry.load_entry_points()
            registry.load_env_plugins()
            _default = registry
        return _default
