"""After tuning, the tuned build must beat the default-scheduled one on this machine to be kept.

MetaSchedule times each task on its own, in bursts, while the machine does whatever else it is
doing; the default schedule's records may have been timed under another load than the
candidates that replaced them. Summed per-task times then promise a speed-up the whole model
does not show (measured: tuning's estimate 6% better, the tuned model 18% slower than the
default one). So compile.tvm builds both and times them here, as whole models, in alternating
blocks within one process, and keeps the faster: tuning never makes a model slower.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: alternating rounds; each round times one block of calls of each build
ROUNDS = 9
#: a block lasts about this long (calls per block follow from one timed call)
BLOCK_S = 0.08


@dataclass
class DuelResult:
    tuned_ms: float
    default_ms: float

    @property
    def keep_tuned(self) -> bool:
        return self.tuned_ms <= self.default_ms

    def as_dict(self) -> dict[str, Any]:
        return {"tuned_ms": round(self.tuned_ms, 4), "default_ms": round(self.default_ms, 4),
                "kept": "tuned" if self.keep_tuned else "default", "rounds": ROUNDS}


def sample_inputs(inputs: list[dict[str, Any]], seed: int = 0) -> list[np.ndarray]:
    """Random inputs with the model's shapes and dtypes (speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for item in inputs:
        dtype = np.dtype(item.get("dtype", "float32"))
        shape = [int(d) for d in item["shape"]]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def duel(tuned: Any, default: Any, inputs: list[np.ndarray], cancelled: Any = lambda: False) -> DuelResult:
    """Median per-call time of each executable over ROUNDS alternating blocks (order flipped
    every round, so neither always runs right after the other's thread pool was busy)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    dev = tvm.cpu(0)
    runs = {}
    for name, executable in (("tuned", tuned), ("default", default)):
        main = VirtualMachine(executable, dev)["main"]
        feed = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
        main(*feed)  # first call: page in code and constants
        t0 = time.perf_counter()
        main(*feed)
        one = max(time.perf_counter() - t0, 1e-6)
        runs[name] = (main, feed, max(1, min(1000, int(BLOCK_S / one))))
    times: dict[str, list[float]] = {"tuned": [], "default": []}
    for round_ in range(ROUNDS):
        if cancelled():
            break
        for name in (("tuned", "default") if round_ % 2 == 0 else ("default", "tuned")):
            main, feed, calls = runs[name]
            t0 = time.perf_counter()
            for _ in range(calls):
                main(*feed)
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    return DuelResult(tuned_ms=statistics.median(times["tuned"] or [0.0]),
                      default_ms=statistics.median(times["default"] or [float("inf")]))
