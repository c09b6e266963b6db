"""Admission by memory: a node starts beside others only while the machine has room for one more.

`--jobs` defaults to the core count, and a worker that imports TensorFlow or torch holds 1-1.5 GB:
on a 32-core machine with 16 GB a sweep would start more of them than fit, and the kernel's
out-of-memory killer would pick the victims. So while at least one node runs, another waits when
the memory available is below the reserve: the larger of $HEITI_MEMORY_RESERVE_MB (default 1024)
and the largest worker seen in this run (the next node may be as big). With nothing running a node
always starts, so a run always progresses, one node at a time if it must. Workers are not started
to import ahead while memory is short either.
"""

from __future__ import annotations

import os

import psutil

DEFAULT_RESERVE_MB = 1024
RESERVE_VARIABLE = "HEITI_MEMORY_RESERVE_MB"


def reserve_floor() -> int:
    """Bytes kept free whatever this run has seen; a value that is no number means the default."""
    try:
        mb = float(os.environ.get(RESERVE_VARIABLE, DEFAULT_RESERVE_MB))
    except ValueError:
        mb = DEFAULT_RESERVE_MB
    return int(max(mb, 0.0) * 2**20)


class MemoryGate:
    def __init__(self) -> None:
        self.floor = reserve_floor()
        self.largest = 0  # bytes: the largest worker measured after a node
        self.told: set[str] = set()  # nodes whose wait was announced

    def saw(self, rss: int) -> None:
        self.largest = max(self.largest, rss)

    @property
    def reserve(self) -> int:
        return max(self.floor, self.largest)

    def short(self) -> int | None:
        """The bytes available when they are fewer than the reserve, else None."""
        available = psutil.virtual_memory().available
        return available if available < self.reserve else None

    def why_waiting(self, available: int) -> str:
        return (f"waiting for memory: {available / 2**30:.1f} GB available, {self.reserve / 2**30:.1f} GB kept in "
                f"reserve (${RESERVE_VARIABLE} or the largest worker so far); it starts when a running node ends")
