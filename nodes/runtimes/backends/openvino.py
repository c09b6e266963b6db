"""OpenVINO on the CPU, from an IR (.xml + .bin, or a folder holding one) or straight from ONNX.

Inference precision defaults to f32: on CPUs with bf16 support OpenVINO otherwise silently runs
bf16, which makes runtimes incomparable. `options["precision"]` (or meta["precision_hint"]) changes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession, describe_dtype


def _find_model(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.xml")) or sorted(path.glob("*.onnx"))
        if not found:
            raise ValueError(f"{path} holds no OpenVINO IR (.xml) nor ONNX model")
        return found[0]
    return path


def _describe(ports: Any) -> list[dict[str, Any]]:
    out = []
    for i, port in enumerate(ports):
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
        try:
            name = port.get_any_name()
        except RuntimeError:
            name = f"port{i}"
        out.append({"name": name, "shape": dims, "dtype": describe_dtype(port.get_element_type().to_dtype())})
    return out


class OpenVINOSession(BaseSession):
    """options: threads (0 = OpenVINO's choice), precision (f32 | f16 | bf16), device ("CPU"),
    performance_hint (LATENCY | THROUGHPUT), meta (the ModelArtifact's meta)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        import openvino as ov

        meta = options.get("meta") or {}
        precision = str(options.get("precision") or meta.get("precision_hint") or "f32")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision,
                                  "PERFORMANCE_HINT": str(options.get("performance_hint") or "LATENCY")}
        threads = int(options.get("threads", 0) or 0)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        model = core.read_model(str(_find_model(Path(model_path))))
        self._compiled = core.compile_model(model, str(options.get("device") or "CPU"), config)
        self._request = self._compiled.create_infer_request()
        self.inputs = _describe(self._compiled.inputs)
        self.outputs = _describe(self._compiled.outputs)
        self._in_types = [np.dtype(d["dtype"]) if d["dtype"] != "bf16" else np.float32 for d in self.inputs]
        self.precision = precision
        self.version = ov.__version__

    def prepare(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} input(s), got {len(inputs)}")
        return [np.ascontiguousarray(x, dtype=dt) for x, dt in zip(inputs, self._in_types, strict=True)]

    def run_prepared(self, feed: list[np.ndarray]) -> Any:
        return self._request.infer(feed, share_inputs=True, share_outputs=True)

    def finish(self, raw: Any) -> list[np.ndarray]:
        return [np.array(raw[i], copy=True) for i in range(len(self.outputs))]

    def close(self) -> None:
        self._request = None
        self._compiled = None
