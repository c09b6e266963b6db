"""Measuring nodes that take turns: runtimes timed in alternating blocks, each block alone.

On a shared machine — a virtual machine on a busy host above all — speed drifts over seconds: here
two ONNX Runtime sessions in one process went from 7.2 to 10.8 ms per call and back together,
for minutes. Runtimes timed one after another each meet another phase of that drift, and the
comparison ranks their luck. With `heiti run --interleave` the runtime nodes ready at the same
time start together and take turns: one holds the machine for a block of calls while the others
wait, so every runtime samples the same stretch of time and nothing runs beside a timed call.

The parent arbitrates over each worker's pipe (`TurnArbiter`: first asked, first served); a node
that ends or dies gives its turn back, and a cancel lets every waiting node go so that it can
stop. The runtimes started together prepare side by side (imports, data, session, inputs: no
timing yet) and ask for their first turn when ready to time; the first turn is granted once every
one of them has asked (or ended), so no preparation ever runs beside a timed call and none waits
for another's turn. A node sees a `Turn` (`ctx.turn`): `take()` waits for its turn, `give()` ends it; both do
nothing when the node does not share the machine.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: a turn's timed stretch: long enough that switching (the other runtime's thread pool going idle,
#: caches refilled by the re-warm calls) is a few percent of it, short against the host's drift
BLOCK_S = 0.5
#: after a turn is granted: the previous holder's thread pool stops spinning first (ONNX Runtime's spins for
#: some 30-60 ms after its last call; TVM's ~10 ms as Heiti sets it, see heiti/nodes/__init__.py)
SETTLE_S = 0.05


class Turn:
    """A node's handle on the turns; does nothing unless the node shares the machine."""

    def __init__(self, ask: Callable[[], None] | None = None, wait: Callable[[], None] | None = None,
                 release: Callable[[], None] | None = None) -> None:
        self._ask, self._wait, self._release = ask, wait, release
        self.held = False

    @property
    def shared(self) -> bool:
        return self._ask is not None

    def take(self) -> int:
        """Wait for this node's turn; the nanoseconds spent waiting (0 when not shared or held)."""
        if not self.shared or self.held:
            return 0
        started = time.perf_counter_ns()
        self._ask()  # type: ignore[misc]
        self._wait()  # type: ignore[misc]
        time.sleep(SETTLE_S)
        self.held = True
        return time.perf_counter_ns() - started

    def give(self) -> None:
        if self.shared and self.held:
            self.held = False
            self._release()  # type: ignore[misc]


class TurnArbiter:
    """The parent's side: grants the turn to one waiting node at a time, in order of asking."""

    def __init__(self, grant: Callable[[Any], None]) -> None:
        self._grant = grant  # sends "go" to a handle's worker
        self.queue: deque[Any] = deque()
        self.holder: Any = None
        self.open = False  # after a cancel: every node goes at once
        self.preparing: set[int] = set()  # ids of the nodes started together that have not asked yet

    def expect(self, handle: Any) -> None:
        """A node started to take turns: no turn is granted before it asks for its first (or ends)."""
        self.preparing.add(id(handle))

    def want(self, handle: Any) -> None:
        self.preparing.discard(id(handle))
        if self.open:
            self._send(handle)
            return
        self.queue.append(handle)
        self._next()

    def done(self, handle: Any) -> None:
        if self.holder is handle:
            self.holder = None
        self._next()

    def gone(self, handle: Any) -> None:
        """The node ended or its worker died: whatever it held or asked for is given back."""
        self.preparing.discard(id(handle))
        if handle in self.queue:
            self.queue.remove(handle)
        self.done(handle)

    def release_all(self) -> None:
        """Cancel: every waiting node goes now (and any that asks later), to see the cancel and stop."""
        self.open = True
        while self.queue:
            self._send(self.queue.popleft())
        self.holder = None

    def _next(self) -> None:
        if self.holder is None and self.queue and not self.preparing:
            self.holder = self.queue.popleft()
            self._send(self.holder)

    def _send(self, handle: Any) -> None:
        try:
            self._grant(handle)
        except OSError:  # its worker is gone: poll() sees the end-of-file and calls gone()
            pass
