"""Helpers for the data/model node tests: run a small graph on a registry of the real node kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from heiti.engine.executor import Executor, RunResult
from heiti.engine.graph import Graph
from heiti.engine.registry import Registry


def real_registry() -> Registry:
    """Registry with the built-in node kinds (datasets, models, training, converters, compilers)."""
    from heiti.nodes import compilers, converters, datasets, models, train

    registry = Registry()
    for module in (datasets, models, train, converters, compilers):
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


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime outputs, one sample at a time when the model fixes batch 1."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0] == 1
    if fixed:
        return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return session.run(None, {name: x})[0]


def litert_run(path: Path, x: np.ndarray) -> np.ndarray:
    """LiteRT outputs per sample; int8 inputs/outputs (de)quantised with their scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y[0])
    return np.stack(results)
