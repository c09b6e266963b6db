"""A model file's declared outputs, read without a runtime, for `heiti validate`.

ONNX through its protobuf (the `onnx` package; weights in side files are not read) and TFLite
through its flatbuffer (the `tflite` schema package): names, shapes and dtypes of the graph outputs,
nothing executed. .keras and .pt2 files can only be described by loading them with Keras or
torch — too heavy for validation — so their outputs are checked when the model node runs.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any


def declared_outputs(path: Path) -> list[dict[str, Any]] | None:
    """[{name, shape, dtype}] of the outputs a .onnx or .tflite file declares (None for unknown
    dimensions); None for other formats, which only a framework can describe."""
    path = Path(path)
    if path.suffix.lower() not in (".onnx", ".tflite"):
        return None
    stat = path.stat()
    return copy.deepcopy(_read(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int, size: int) -> list[dict[str, Any]]:
    """Cached by the file's time and size: the editor validates after every edit, and a large
    model's protobuf takes a while to parse."""
    del mtime_ns, size  # part of the cache key only
    return onnx_outputs(Path(path)) if path.lower().endswith(".onnx") else tflite_outputs(Path(path))


def onnx_outputs(path: Path) -> list[dict[str, Any]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
        out.append({"name": value.name, "shape": shape, "dtype": dtype})
    return out


def tflite_outputs(path: Path) -> list[dict[str, Any]]:
    import tflite

    data = path.read_bytes()
    if not tflite.Model.ModelBufferHasIdentifier(data, 0):  # flatbuffers are read unchecked: look first
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() == 0:
        raise ValueError("the file holds no subgraph")
    graph = model.Subgraphs(0)
    # the schema's tensor types by number; their lower-cased names are numpy's where numpy has them
    dtypes = {value: name.lower() for name, value in vars(tflite.TensorType).items() if not name.startswith("_")}
    out = []
    for i in range(graph.OutputsLength()):
        tensor = graph.Tensors(graph.Outputs(i))
        if tensor.ShapeSignatureLength():  # -1 marks a dimension known only when run
            dims = tensor.ShapeSignatureAsNumpy()
        else:
            dims = tensor.ShapeAsNumpy() if tensor.ShapeLength() else []
        name = tensor.Name()
        out.append({"name": name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
                    "shape": [int(d) if int(d) > 0 else None for d in dims],
                    "dtype": dtypes.get(tensor.Type(), "float32")})
    return out
