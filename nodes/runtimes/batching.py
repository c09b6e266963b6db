"""A runtime node's inputs: the split read, laid out as the model wants, cut into fixed batches,
checked against the model's input shape, and the outputs taken apart again per sample.

numpy is imported inside each function: listing the node kinds must not load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.node import NodeError

if TYPE_CHECKING:
    import numpy as np
    from heiti.engine.payloads import DatasetHandle


def load_split(dataset: DatasetHandle, split: str, max_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    x, y = dataset.load_split(split, max_samples)
    if len(x) == 0:
        raise NodeError(f"the '{split}' split of {Path(dataset.path).name} is empty")
    return np.ascontiguousarray(x, dtype=np.float32), y


def to_layout(x: np.ndarray, have: str, want: str) -> np.ndarray:
    import numpy as np

    if x.ndim != 4 or have == want:
        return x
    if (have, want) == ("NCHW", "NHWC"):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if (have, want) == ("NHWC", "NCHW"):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise NodeError(f"cannot turn layout {have} into {want}")


def split_batches(x: np.ndarray, batch_size: int) -> tuple[list[np.ndarray], int]:
    """Fixed-size batches; the last one padded with copies of the final sample (returns the pad)."""
    import numpy as np

    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    pad = batch_size - len(batches[-1])
    if pad:
        batches[-1] = np.concatenate([batches[-1], np.repeat(batches[-1][-1:], pad, axis=0)])
    return batches, pad


def unbatch(outputs: list[list[np.ndarray]], pad: int, n: int) -> list[list[np.ndarray]]:
    """Per-sample outputs (each keeping a batch axis of 1) from per-call ones, padding dropped."""
    import numpy as np

    per_sample: list[list[np.ndarray]] = []
    for call in outputs:
        arrays = [np.asarray(a) for a in call]
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        for j in range(batch):
            per_sample.append([a[j:j + 1] if a.ndim and a.shape[0] == batch else a for a in arrays])
    return per_sample[:n]


def check_shape(session: Any, x: np.ndarray, batch_size: int, runtime: str) -> None:
    inputs = getattr(session, "inputs", None) or []
    if not inputs or not inputs[0].get("shape"):
        return
    shape = inputs[0]["shape"]
    want = [batch_size, *x.shape[1:]]
    if len(shape) != len(want):
        raise NodeError(f"{runtime}: the model takes inputs of shape {shape}, the dataset gives {want}",
                        "check the model's layout (meta 'layout') and the dataset's input shape")
    def fits(dims: list[int]) -> bool:
        return all(have is None or have == need for have, need in zip(shape[1:], dims, strict=True))

    if shape[0] is not None and shape[0] != batch_size:
        raise NodeError(f"{runtime}: the model's batch size is fixed at {shape[0]}, the run needs "
                        f"{batch_size} (inputs {want}, model {shape})", "set batch_size to the model's batch")
    if not fits(want[1:]):
        other = None
        if len(want) == 4:
            swapped = {"NHWC": [want[2], want[3], want[1]], "NCHW": [want[3], want[1], want[2]]}
            other = next((name for name, dims in swapped.items() if fits(dims)), None)
        raise NodeError(f"{runtime}: the model takes inputs of shape {shape}, the dataset gives {want}",
                        f"the model looks {other}: set its meta 'layout' to {other}" if other
                        else "resize the dataset to the model's input")
