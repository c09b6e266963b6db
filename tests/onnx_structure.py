"""Name-blind identity of ONNX graphs: two conversions that differ only in the names they gave
tensors and constants (tf2onnx numbers them as it goes) have the same structure."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any


def structure(model: Any) -> Counter[str]:
    """Every node as a hash of its op, attributes and — recursively — what feeds it (constants by
    their bytes, graph inputs by position); the multiset of the graph outputs' hashes is added."""
    from onnx import numpy_helper

    graph = model.graph
    ids: dict[str, str] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        ids[init.name] = _digest("const", str(array.dtype), str(array.shape), array.tobytes())
    for i, inp in enumerate(graph.input):
        ids.setdefault(inp.name, _digest("input", str(i), inp.type.SerializeToString()))
    producers = {out: node for node in graph.node for out in node.output}
    nodes: Counter[str] = Counter()

    def tensor(name: str) -> str:
        if name == "":
            return "absent"
        if name not in ids:
            node = producers[name]
            attrs = sorted((a.name, _attr(a)) for a in node.attribute)
            key = _digest(node.op_type, node.domain, repr(attrs), *[tensor(i) for i in node.input])
            for k, out in enumerate(node.output):
                ids[out] = _digest(key, str(k))
            nodes[key] += 1
        return ids[name]

    outputs = [tensor(o.name) for o in graph.output]
    for node in graph.node:
        for out in node.output:
            tensor(out)
    return nodes + Counter({f"output:{h}": 1 for h in outputs})


def _attr(attribute: Any) -> bytes:
    copy = type(attribute)()
    copy.CopyFrom(attribute)
    copy.name = ""
    return copy.SerializeToString(deterministic=True)


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()
