"""Node-kind migrations: params saved by an older version of a kind, brought to its current shape.

Every saved node carries the version of its kind (`NodeSpec.version`); a node without one was
written before versions were saved and counts as version 1. A kind that renames or reshapes a
param bumps `version` and implements `Node.migrate(params, from_version)`. The graph file's own
format version is a separate matter (engine/graph.py, `MIGRATIONS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heiti.engine.graph import Graph, NodeSpec
    from heiti.engine.node import Node
    from heiti.engine.registry import Registry

UNVERSIONED = 1


def saved_version(spec: NodeSpec) -> int:
    return spec.version if spec.version is not None else UNVERSIONED


def instantiate_params(cls: type[Node], spec_params: dict[str, Any], version: int | None) -> Any:
    """The kind's Params from saved params; `version` None = saved before versions (version 1)."""
    return cls.Params(**migrate_params(cls, spec_params, UNVERSIONED if version is None else version))


def migrate_params(cls: type[Node], params: dict[str, Any], from_version: int) -> dict[str, Any]:
    """The params in the shape of `cls.version` (a copy; the input is left alone)."""
    params = dict(params)
    if from_version < cls.version:
        params = dict(cls.migrate(params, from_version))
    return params


def upgrade_graph(graph: Graph, registry: Registry, stamp: bool = True) -> list[str]:
    """Migrate every node of a known kind saved by an older version, in place, and set its version
    to the kind's; with `stamp`, nodes without a version get it too (as saving does). Returns the
    ids whose params changed. Nodes saved by a newer version than installed are left for
    validation to report; a migration that raises leaves its node as it was (validation reports
    the params)."""
    changed = []
    for spec in graph.nodes:
        if spec.kind not in registry:
            continue
        cls = registry.get(spec.kind)
        version = saved_version(spec)
        if version > cls.version or version == cls.version and (spec.version is not None or not stamp):
            continue
        try:
            params = migrate_params(cls, spec.params, version)
        except Exception:  # noqa: BLE001 - a kind's migration may choke on odd params
            continue
        if params != spec.params:
            changed.append(spec.id)
        spec.params, spec.version = params, cls.version
    return changed


def upgraded(graph: Graph, registry: Registry) -> Graph:
    """A migrated, version-stamped copy of `graph` (what a run records as `graph.json`)."""
    copy = graph.copy_deep()
    upgrade_graph(copy, registry)
    return copy
