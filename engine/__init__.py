"""Heiti's headless engine: graph model, registry, validation, executor, events. No Qt here."""

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

__all__ = [
    "Cancelled", "CancelToken", "RunContext", "Graph", "GraphLoadError", "load_graph", "loads_graph",
    "In", "Node", "NodeError", "Out", "DatasetHandle", "Measurements", "ModelArtifact", "Payload",
    "ReportArtifact", "TargetHandle",
]
