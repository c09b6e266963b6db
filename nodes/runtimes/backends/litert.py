"""LiteRT (TensorFlow Lite) interpreter: float, float16 and integer-quantised models.

Integer tensors are quantised from float with their (scale, zero point) in `prepare`, before the
measurement loop, and dequantised in `finish`; the timed call is `invoke()` alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession, describe_dtype


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Float -> integer tensor, q = round(x / scale) + zero_point, clipped to the dtype's range."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantised integer tensor, else None."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return None
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    zps = np.asarray(params.get("zero_points", []))
    if scales.size > 1:
        raise ValueError(f"tensor {detail['name']!r} is quantised per channel; only per-tensor is supported")
    if scales.size == 1:
        return float(scales[0]), int(zps[0]) if zps.size else 0
    scale, zp = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zp)) if scale else None


def _describe(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in details:
        quant = _quant(d)
        signature = d.get("shape_signature")
        dims = signature if signature is not None and len(signature) else d["shape"]
        out.append({"name": d["name"], "shape": [int(s) if s >= 0 else None for s in dims],
                    "dtype": describe_dtype(d["dtype"]),
                    **({"scale": quant[0], "zero_point": quant[1]} if quant else {})})
    return out


class LiteRTSession(BaseSession):
    """options: threads (0/None = LiteRT's default), batch_size (resizes a batch-1 model),
    xnnpack (False = the built-in kernels without LiteRT's default XNNPACK delegate)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        threads = int(options.get("threads", 0) or 0)
        resolver = (OpResolverType.AUTO if options.get("xnnpack", True)
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._interp = Interpreter(model_path=model_path, num_threads=threads or None,
                                   experimental_op_resolver_type=resolver)
        batch = int(options.get("batch_size", 0) or 0)
        if batch:
            for d in self._interp.get_input_details():
                if len(d["shape"]) and d["shape"][0] != batch:
                    self._interp.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self.inputs = _describe(self._in)
        self.outputs = _describe(self._out)
        self._in_q = [_quant(d) for d in self._in]
        self._out_q = [_quant(d) for d in self._out]
        self._invoke = self._interp.invoke

    def prepare(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in):
            raise ValueError(f"model takes {len(self._in)} input(s), got {len(inputs)}")
        feed = []
        for x, d, q in zip(inputs, self._in, self._in_q, strict=True):
            if q is not None:
                feed.append(quantize(x, q[0], q[1], d["dtype"]))
            else:
                feed.append(np.ascontiguousarray(x, dtype=d["dtype"]))
        return feed

    def stage(self, feed: list[np.ndarray]) -> None:
        for d, x in zip(self._in, feed, strict=True):
            self._interp.set_tensor(d["index"], x)

    def run_prepared(self, feed: Any) -> None:
        self._invoke()

    def finish(self, raw: Any) -> list[np.ndarray]:
        outs = []
        for d, q in zip(self._out, self._out_q, strict=True):
            value = self._interp.get_tensor(d["index"])
            outs.append(dequantize(value, *q) if q is not None else value.astype(np.float32, copy=True))
        return outs

    def close(self) -> None:
        self._interp = None
        self._invoke = None
