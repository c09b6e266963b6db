"""Load and validate a generated 1,000-node graph. Goal: validation <= 0.1 s.

The graph mixes value nodes (fan-in wires) and model chains (format propagation), with a few
format mismatches so that converter-chain search runs too.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heiti.engine.graph import load_graph  # noqa: E402
from heiti.engine.registry import Registry  # noqa: E402
from heiti.engine.validate import validate  # noqa: E402

from tests import testnodes  # noqa: E402


def generate(n: int = 1000) -> dict:
    nodes, edges = [], []
    i = 0
    while len(nodes) < n:
        # a value fan-in: 3 sources into an adder
        ids = [f"s{i}_{k}" for k in range(3)]
        for k, sid in enumerate(ids):
            nodes.append({"id": sid, "kind": "test.source", "params": {"value": k}})
        nodes.append({"id": f"add{i}", "kind": "test.add", "params": {"offset": 1}})
        edges += [{"from": [sid, "out"], "to": [f"add{i}", "values"]} for sid in ids]
        # a model chain keras -> pass -> tvm (a mismatch every 10th chain) or keras -> onnx -> tvm
        nodes.append({"id": f"m{i}", "kind": "test.model", "params": {"fmt": "keras"}})
        nodes.append({"id": f"p{i}", "kind": "test.pass"})
        edges.append({"from": [f"m{i}", "model"], "to": [f"p{i}", "model"]})
        if i % 10 == 0:
            nodes.append({"id": f"t{i}", "kind": "test.tvm"})
            edges.append({"from": [f"p{i}", "model"], "to": [f"t{i}", "model"]})
        else:
            nodes.append({"id": f"c{i}", "kind": "test.keras_to_onnx"})
            nodes.append({"id": f"t{i}", "kind": "test.tvm"})
            edges.append({"from": [f"p{i}", "model"], "to": [f"c{i}", "model"]})
            edges.append({"from": [f"c{i}", "model"], "to": [f"t{i}", "model"]})
        i += 1
    return {"format": "heiti-graph", "version": 1, "name": "scale", "nodes": nodes,
            "edges": edges}


def main() -> None:
    registry = Registry()
    for cls in testnodes.ALL:
        registry.register(cls)
    data = generate()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        path.write_text(json.dumps(data))
        loads, checks = [], []
        for _ in range(7):
            t = time.perf_counter()
            graph = load_graph(path)
            loads.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = validate(graph, registry)
            checks.append(time.perf_counter() - t)
    print(f"graph: {len(graph.nodes)} nodes, {len(graph.edges)} wires, {len(result.problems)} problems found")
    print(f"load     median {statistics.median(loads) * 1000:7.1f} ms")
    print(f"validate median {statistics.median(checks) * 1000:7.1f} ms   goal <= 100 ms   "
          f"ratio to goal {statistics.median(checks) / 0.1:.2f}")


if __name__ == "__main__":
    main()
