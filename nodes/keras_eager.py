"""Eager TensorFlow ops run straight as kernels, not as one-op functions, while a block runs.

TensorFlow runs each eager op as a one-op function: the first time it meets an op with new
attributes or new variable shapes it instantiates that function, which runs the graph optimisation
passes (XLA's clustering among them) on it — ~1-1.5 ms per new kernel on a 2-core machine. Loading
MobileNetV2 creates 262 variables of ~100 distinct shapes and freezing it for tf2onnx reads them
all: most of those ops are new each time. Run directly, the same kernels compute the same values
~3x sooner.

The switch is TensorFlow's own (`TFE_ContextSetRunEagerOpAsFunction`, which Python sets on at
start and never reads back); it is process-wide, so while any block is inside, every thread's eager
ops run directly — the same kernels, the way TensorFlow ran all eager ops before 2.9.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_inside = 0


@contextlib.contextmanager
def direct_eager_ops() -> Iterator[None]:
    """Eager ops run as kernels inside the block (nests, and across threads)."""
    global _inside
    from tensorflow.python import pywrap_tfe
    from tensorflow.python.eager import context

    switch = getattr(pywrap_tfe, "TFE_ContextSetRunEagerOpAsFunction", None)
    if switch is None:  # another TensorFlow: nothing to switch
        yield
        return
    ctx = context.context()
    ctx.ensure_initialized()
    with _lock:
        _inside += 1
        if _inside == 1:
            switch(ctx._handle, False)
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                switch(ctx._handle, True)  # what TensorFlow's context always sets
