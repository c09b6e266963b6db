"""Limits of `heiti serve` against clients that misbehave (docs/protocol.md, "Limits"): how many
links, how much noise before a link is closed, how many error replies a second, how many log lines.

The rate limits keep a flood of bad frames from costing the device more than the flood itself.
"""

from __future__ import annotations

import sys
import threading
import time

MAX_LINKS = 8
#: bytes before the first valid frame after which a TCP link is closed (it is no client of ours)
MAX_GARBAGE = 64 * 1024
#: protocol errors in a row (no valid frame between) after which a TCP link is closed
MAX_ERRORS_IN_A_ROW = 64
#: error replies to bad frames: this many per second per link, bursts of ERROR_BURST
ERROR_RATE, ERROR_BURST = 5.0, 10
#: runtimes whose models are native code run inside this process
NATIVE_RUNTIMES = frozenset({"tvm"})


class TokenBucket:
    """A token bucket: `take` is True at most `rate` times a second after a burst of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class LogLimit:
    """At most `per_window` lines of one kind per `window` s; then a count of what was left out."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window, self.window = per_window, window
        self._kinds: dict[str, list[float | int]] = {}  # kind -> [window start, lines, suppressed]
        self._lock = threading.Lock()

    def allow(self, kind: str) -> tuple[bool, int]:
        """(print this line?, lines of this kind left out in the window that just ended)."""
        now = time.monotonic()
        with self._lock:
            state = self._kinds.setdefault(kind, [now, 0, 0])
            dropped = 0
            if now - state[0] > self.window:
                dropped = int(state[2])
                state[:] = [now, 0, 0]
            if state[1] < self.per_window:
                state[1] += 1
                return True, dropped
            state[2] += 1
            return False, dropped


_log_limit = LogLimit()


def say(message: str, kind: str | None = None) -> None:
    """One line on stderr; lines of a `kind` that a client can provoke at will are rate-limited."""
    if kind is not None:
        allowed, dropped = _log_limit.allow(kind)
        if dropped:
            print(f"heiti serve: ({dropped} more '{kind}' lines left out)", file=sys.stderr, flush=True)
        if not allowed:
            return
    print(f"heiti serve: {message}", file=sys.stderr, flush=True)
