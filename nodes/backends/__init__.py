"""Runtime back-ends: one small class per inference framework, shared by the in-process runtime
nodes and by `heiti serve` on a device, so that both run a model exactly the same way.

Contract (kept free of framework imports at module top):

    session = open_session("onnxruntime", "/path/model.onnx", {"threads": 2})
    session.inputs   -> [{"name": str, "shape": [int|None, ...], "dtype": "float32"|"int8"|...}]
    session.outputs  -> same shape of description
    outs = session.run([np.ndarray, ...])   # float inputs in, float outputs out (int8 models
                                            # are quantised/dequantised inside the session)
    session.close()

`run` is the only thing timed by the measurement loop: a session prepares everything it can
before (bind buffers, allocate tensors), so that the timed call is the framework's own.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np


class Session(Protocol):
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


#: runtime kind -> "module:factory"; the factory is called as factory(model_path, options)
BACKENDS: dict[str, str] = {
    "onnxruntime": "nodes.backends.onnxruntime:OrtSession",
    "litert": "nodes.backends.litert:LiteRTSession",
    "tvm": "nodes.backends.tvm:TVMSession",
    "openvino": "nodes.backends.openvino:OpenVINOSession",
    "torch": "nodes.backends.torch:TorchSession",
    "keras": "nodes.backends.keras:KerasSession",
}


class BackendUnavailable(RuntimeError):
    """The framework for this runtime is not installed here (reported in HELLO as unavailable)."""


def open_session(runtime: str, model_path: str, options: dict[str, Any] | None = None) -> Session:
    try:
        target = BACKENDS[runtime]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(BACKENDS))}") from None
    module_name, _, factory = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailable(f"runtime {runtime!r} is not available here: {err}") from err
    return getattr(module, factory)(str(model_path), dict(options or {}))


def available_runtimes() -> list[str]:
    """Runtime kinds whose framework can be imported here (checked without importing it)."""
    import importlib.util

    needs = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "tvm": "tvm",
             "openvino": "openvino", "torch": "torch", "keras": "keras"}
    return [name for name, module in needs.items() if importlib.util.find_spec(module) is not None]
