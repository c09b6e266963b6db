"""Heiti's headless engine: graph model, registry, validation, executor, events. No Qt here.

The names below are imported on first use (PEP 562), so that importing a submodule — the `heiti`
command's `heiti.engine.cli` first of all — does not load pydantic and the graph model before the
command has started its fork server (engine.forkserver).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from heiti.engine.plugin_scan import spare_pydantic_plugin_lookup

spare_pydantic_plugin_lookup()  # before any pydantic model is built, in this process and its workers

_EXPORTS = {
    "Cancelled": "context", "CancelToken": "context", "RunContext": "context",
    "Graph": "graph", "GraphLoadError": "graph", "load_graph": "graph", "loads_graph": "graph",
    "In": "node", "Node": "node", "NodeError": "node", "Out": "node",
    "DatasetHandle": "payloads", "Measurements": "payloads", "ModelArtifact": "payloads", "Payload": "payloads",
    "ReportArtifact": "payloads", "TargetHandle": "payloads",
}

__all__ = [
    "Cancelled", "CancelToken", "RunContext", "Graph", "GraphLoadError", "load_graph", "loads_graph",
    "In", "Node", "NodeError", "Out", "DatasetHandle", "Measurements", "ModelArtifact", "Payload",
    "ReportArtifact", "TargetHandle",
]

if TYPE_CHECKING:
    from heiti.engine.context import Cancelled, CancelToken, RunContext
    from heiti.engine.graph import Graph, GraphLoadError, load_graph, loads_graph
    from heiti.engine.node import In, Node, NodeError, Out
    from heiti.engine.payloads import (
        DatasetHandle,
        Measurements,
        ModelArtifact,
        Payload,
        ReportArtifact,
        TargetHandle,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'heiti.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"heiti.engine.{module}"), name)
    globals()[name] = value
    return value
