"""What a running node sees of the engine: its folder, progress, metrics, logs, cancellation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from heiti.engine.events import EventBus, NodeLog, NodeMetric, NodeProgress
from heiti.engine.turns import Turn


class Cancelled(Exception):
    """Raised inside a node when the run was asked to stop."""


class CancelToken:
    """Cooperative cancellation shared by the executor and every node of one run."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class RunContext:
    """Handed to `Node.run`. Progress events are throttled; metrics are not."""

    PROGRESS_PERIOD_S = 0.05

    def __init__(
        self,
        node_id: str,
        workdir: Path,
        run_dir: Path,
        bus: EventBus,
        token: CancelToken,
        run_t0: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.workdir = Path(workdir)
        self.run_dir = Path(run_dir)
        self._bus = bus
        self._token = token
        self._last_progress = 0.0
        #: time.perf_counter() at run start, the clock of every metric's x in seconds
        self.t0 = run_t0 if run_t0 is not None else time.perf_counter()
        #: the machine, when measuring nodes take turns (`heiti run --interleave`; engine.turns)
        self.turn = Turn()

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.perf_counter()
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction in (0.0, 1.0) or now - self._last_progress >= self.PROGRESS_PERIOD_S:
            self._last_progress = now
            self._bus.emit(NodeProgress(node=self.node_id, fraction=fraction, message=message))

    def metric(self, name: str, value: float, x: float | None = None, source: str = "host") -> None:
        if x is None:
            x = time.perf_counter() - self.t0
        self._bus.emit(
            NodeMetric(node=self.node_id, name=name, value=float(value), x=float(x), source=source)
        )

    def log(self, message: str, level: str = "info") -> None:
        self._bus.emit(NodeLog(node=self.node_id, level=level, message=str(message)))

    def warn(self, message: str) -> None:
        self.log(message, "warning")

    @property
    def cancelled(self) -> bool:
        return self._token.cancelled

    def check_cancelled(self) -> None:
        """Call inside long loops: raises `Cancelled` when the user pressed Stop or Ctrl-C."""
        if self._token.cancelled:
            raise Cancelled(f"{self.node_id}: cancelled")
