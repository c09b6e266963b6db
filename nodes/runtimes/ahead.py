"""A runtime node's data, read and laid out while the node still waits for its model.

Reading a split and turning it to the model's layout does not depend on the model (MobileNetV2's
200 test images: 120 MB read and transposed, ~0.6 s). The worker that makes a waiting runtime's
imports ahead also does this (`RuntimeNode.prepare_ahead`), in the layout the model most likely
takes; the node, when it runs in that worker, takes the arrays from here instead of reading the
split again. One entry, handed over once (the arrays are the node's to keep), keyed by the dataset
(its payload and its file's size and modification time), the split and the sample count.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from heiti.engine.payloads import DatasetHandle

_lock = threading.Lock()
_held: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray | None, str]] = {}


def _key(dataset: DatasetHandle, split: str, max_samples: int) -> tuple[Any, ...]:
    try:
        st = os.stat(dataset.path)
        stamp: tuple[int, int] = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    return dataset.model_dump_json(), stamp, split, int(max_samples)


def hold(dataset: DatasetHandle, split: str, max_samples: int, x: np.ndarray, y: np.ndarray | None,
         layout: str) -> None:
    """Keep a split's arrays (in `layout`) for the node that will ask for them; replaces any other."""
    with _lock:
        _held.clear()
        _held[_key(dataset, split, max_samples)] = (x, y, layout)


def take(dataset: DatasetHandle, split: str, max_samples: int) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """The arrays held for this dataset, split and count, and their layout; None when nothing
    matches (another dataset, or a file changed since). Either way the store is empty afterwards."""
    with _lock:
        entry = _held.pop(_key(dataset, split, max_samples), None)
        _held.clear()  # what did not match will not: its memory goes
        return entry


def held() -> int:
    """How many entries are held (tests)."""
    return len(_held)
