"""Describing a model file's inputs and outputs (ONNX, TFLite), for the model loaders and the
converters alike; a module of its own so that neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def onnx_io(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """[{name, shape, dtype}] of an ONNX model's graph inputs (initializers excluded) and outputs."""
    import onnx

    initializers = {i.name for i in model.graph.initializer}

    def describe(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
        return {"name": value.name, "shape": shape, "dtype": dtype}

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [describe(v) for v in model.graph.output]


def tflite_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """Inputs/outputs of a .tflite file (with int8 scale/zero point), and its interpreter."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def describe(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for d in details:
            signature = [int(v) for v in d.get("shape_signature", d["shape"])]
            item: dict[str, Any] = {"name": d["name"], "shape": [v if v > 0 else None for v in signature],
                                    "dtype": np.dtype(d["dtype"]).name}
            scale, zero = d.get("quantization", (0.0, 0))
            if scale:
                item["quantization"] = [float(scale), int(zero)]
            out.append(item)
        return out

    return describe(interpreter.get_input_details()), describe(interpreter.get_output_details()), interpreter
