"""Helpers for the data/model node tests: run a small graph on a registry of the real node kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.executor import Executor, RunResult
from engine.graph import Graph
from engine.registry import Registry


def real_registry() -> Registry:
    """Registry with the built-in node kinds (datasets, models, training, converters, compilers)."""
    import nodes.compilers
    import nodes.converters
    import nodes.datasets
    import nodes.models
    import nodes.train

    registry = Registry()
    for module in (nodes.datasets, nodes.models, nodes.train, nodes.converters, nodes.compilers):
        registry.register_module(module)
    return registry


def build(nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str, str]],
          name: str = "test") -> Graph:
    """nodes: (id, kind, params); edges: (src id, src port, dst id, dst port)."""
    graph = Graph(name=name)
    for node_id, kind, params in nodes:
        graph.add_node(kind, node_id, params)
    for src, src_port, dst, dst_port in edges:
        graph.connect((src, src_port), (dst, dst_port))
    return graph


def run(graph: Graph, tmp_path: Path, name: str = "run", registry: Registry | None = None,
        events: list | None = None, executor: Executor | None = None) -> RunResult:
    executor = executor or Executor(registry or real_registry(), cache_dir=tmp_path / "cache")
    if events is not None:
        executor.subscribe(events.append)
    return executor.run(graph, tmp_path / name)


def ok(result: RunResult) -> RunResult:
    assert result.status == "ok", result.errors
    return result
