"""ONNX Runtime session on the CPU: intra/inter-op threads and graph optimisation level."""

from __future__ import annotations

from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession, describe_dtype

OPT_LEVELS = ("disable", "basic", "extended", "all")
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int32)": np.int32,
             "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _describe(args: list[Any]) -> list[dict[str, Any]]:
    return [{"name": a.name, "shape": [d if isinstance(d, int) else None for d in a.shape],
             "dtype": describe_dtype(_NP_TYPES.get(a.type, a.type))} for a in args]


class OrtSession(BaseSession):
    """options: threads (intra-op, 0 = ORT's choice), inter_threads, graph_optimization
    (disable | basic | extended | all), providers (default CPU)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(options.get("threads", 0) or 0)
        so.inter_op_num_threads = int(options.get("inter_threads", 0) or 0)
        level = str(options.get("graph_optimization", "all"))
        if level not in OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {', '.join(OPT_LEVELS)}, got {level!r}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        so.log_severity_level = 3
        providers = options.get("providers") or ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(model_path, sess_options=so, providers=providers)
        self.inputs = _describe(self._session.get_inputs())
        self.outputs = _describe(self._session.get_outputs())
        self._in_names = [i["name"] for i in self.inputs]
        self._in_types = [_NP_TYPES.get(a.type, np.float32) for a in self._session.get_inputs()]
        self._out_names = [o["name"] for o in self.outputs]
        self.version = ort.__version__

    def prepare(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs) != len(self._in_names):
            raise ValueError(f"model takes {len(self._in_names)} input(s), got {len(inputs)}")
        return {name: np.ascontiguousarray(x, dtype=dtype)
                for name, x, dtype in zip(self._in_names, inputs, self._in_types, strict=True)}

    def run_prepared(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self._out_names, feed)

    def finish(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        return raw

    def close(self) -> None:
        self._session = None
