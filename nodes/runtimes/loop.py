"""The timed loop: a cold first call, warm-up, then `run(feed)` timed pass after pass.

Framework-free on purpose: the loop takes plain callables (prepare / stage / run / finish) so the
same code times ONNX Runtime, LiteRT, TVM, a remote device, or a bare function in a benchmark.

Why the loop looks the way it does (docs/architecture.md, Measurements): inputs are prepared before
the loop; only the runtime call sits between the two `perf_counter_ns` reads; the cold first call is
kept apart; nothing is emitted from inside the loop — a background thread (the ResourceSampler's)
reads the preallocated latency array and forwards new values as metric events once per sampling
period, at most ten averaged latency events a tick, and the runtime nodes sample every 0.25 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from heiti.engine.measurements import TimeSeries
from heiti.engine.turns import BLOCK_S
from heiti.nodes.runtimes.contention import LoadMeter
from heiti.nodes.runtimes.sampler import MetricSink, ResourceSampler

#: untimed calls after each turn another runtime had (engine.turns): its block evicted our caches
REWARM = 2


@dataclass
class LoopResult:
    latencies_ns: np.ndarray  # timed calls after the first (cold) one, every pass
    first_ns: int | None
    postprocess_ns: np.ndarray  # first pass only
    outputs: list[Any]  # first pass only: one per feed, for quality
    wall_ns: int  # first timed call start -> last call end: the period between inferences
    extra: dict[str, Any] = field(default_factory=dict)
    completed: int = 0  # timed calls, every pass
    cancelled: bool = False
    machine_load: dict[str, float] | None = None  # others' CPU use over the timed loop (runtimes.contention)
    turns: int = 0  # times the loop gave the machine to another runtime (engine.turns)


class LatencyBuffer:
    """Per-call latencies (ns) of a loop whose call count is not known in advance.

    Chunks of zeros: the loop fills the current chunk and takes a new one when it is full, so
    nothing is copied between timed calls, and a grown chunk costs one calloc. A zero slot means
    "not timed yet" (a call takes at least one ns), which lets a LatencyForwarder read the
    chunks from another thread while the loop writes them.
    """

    def __init__(self, first: int | np.ndarray, chunk: int = 4096) -> None:
        head = first if isinstance(first, np.ndarray) else np.zeros(max(int(first), 1), dtype=np.int64)
        self.chunks: list[np.ndarray] = [head]
        self.chunk = max(int(chunk), 1)
        self.started_ns: int | None = None  # the loop's start, for progress estimates

    def grow(self, size: int | None = None) -> np.ndarray:
        new = np.zeros(max(int(size or self.chunk), 1), dtype=np.int64)
        self.chunks.append(new)
        return new

    def values(self, count: int) -> np.ndarray:
        """The first `count` latencies, as one array."""
        return np.concatenate(self.chunks)[:count] if len(self.chunks) > 1 else self.chunks[0][:count].copy()


class LatencyForwarder:
    """Reads the loop's latency buffer from another thread and forwards new values.

    A zero slot means "not timed yet", so the loop writes nothing but its latency. At most
    `max_points` events go out per tick: a burst is averaged in chunks, which keeps the thread's
    hold on the GIL short.
    """

    def __init__(self, latencies_ns: np.ndarray | LatencyBuffer, sink: Callable[[str, float, float], None],
                 name: str = "latency_ms", max_points: int = 10) -> None:
        self.buffer = latencies_ns if isinstance(latencies_ns, LatencyBuffer) else LatencyBuffer(latencies_ns)
        self.sink = sink
        self.name = name
        self.max_points = max_points
        self.sent = 0
        self._lock = threading.Lock()

    def _new_values(self) -> np.ndarray:
        """Timed values after the `sent` first ones, up to the first untimed slot."""
        parts, offset = [], 0
        for chunk in list(self.buffer.chunks):  # the loop may append a chunk meanwhile
            end = offset + chunk.size
            if end > self.sent:
                tail = chunk[max(self.sent - offset, 0):]
                zeros = np.flatnonzero(tail == 0)
                if zeros.size:
                    parts.append(tail[:int(zeros[0])].copy())
                    break
                parts.append(tail.copy())
            offset = end
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def count_done(self) -> int:
        return self.sent + self._new_values().size

    def __call__(self) -> None:
        with self._lock:
            new = self._new_values().astype(np.float64) / 1e6
            if new.size == 0:
                return
            chunks = np.array_split(np.arange(new.size), min(new.size, self.max_points))
            for idx in chunks:
                self.sink(self.name, float(new[idx].mean()), float(self.sent + idx[-1]))
            self.sent += new.size


def run_timed_loop(
    run: Callable[[Any], Any],
    feeds: Sequence[Any],
    *,
    warmup: int = 10,
    stage: Callable[[Any], Any] | None = None,
    finish: Callable[[Any], Any] | None = None,
    after_call: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    latencies_ns: np.ndarray | LatencyBuffer | None = None,
    check_every: int = 16,
    repeat: int = 1,
    duration_s: float = 0.0,
    pause: Callable[[], None] | None = None,
    block_s: float = 0.5,
) -> LoopResult:
    """Time a cold first call, warm up, then time `run(feed)` over the feeds, pass after pass.

    The cold call (on feeds[0]) is reported apart and kept out of the statistics. The first pass
    covers every feed and keeps its outputs (quality is computed once per sample); later passes
    run the same steps and are timed the same way, until `repeat` passes are done and
    `duration_s` has passed (a duration may end mid-pass). `stage(feed)` (copy into the runtime's
    input buffers) and `finish(raw)` (fetch/dequantise the outputs) run outside the timed region;
    `finish` and `after_call(i)` (e.g. reading a device's own timing of call i) are timed apart
    as post-processing on the first pass. Pass `latencies_ns` (zeros, or a LatencyBuffer) to let
    a LatencyForwarder watch it while the loop runs.

    `pause()` (measuring nodes taking turns, engine.turns) is called between calls once `block_s`
    of timing has passed: it gives the machine to another runtime and returns when it is this
    loop's turn again. REWARM untimed calls follow it (caches and thread pools refilled after the
    other runtime's block); the time paused and re-warming is left out of the wall time, and a
    `duration_s` counts timed stretches only.
    """
    if not feeds:
        raise ValueError("no inputs to run")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    clock = time.perf_counter_ns
    n = len(feeds)
    buf = latencies_ns if isinstance(latencies_ns, LatencyBuffer) else LatencyBuffer(
        n * repeat if latencies_ns is None else latencies_ns)
    post = np.zeros(n, dtype=np.int64)
    outputs: list[Any] = [None] * n

    if stage is not None:
        stage(feeds[0])
    t = clock()
    raw = run(feeds[0])
    first = clock() - t
    if finish is not None:
        finish(raw)

    def untimed(calls: int) -> None:
        """Warm-up calls: every step of a timed call, nothing recorded."""
        for k in range(calls):
            feed = feeds[k % n]
            if stage is not None:
                stage(feed)
            out = run(feed)
            if finish is not None:
                finish(out)

    untimed(warmup)
    cur = buf.chunks[-1]
    size, j = cur.size, 0
    completed = 0
    stopped = False
    min_calls = n * repeat
    t_start = t_end = clock()
    buf.started_ns = t_start
    deadline = t_start + int(max(duration_s, 0.0) * 1e9)
    block_ns, paused_ns, switches = int(block_s * 1e9), 0, 0
    block_start = t_start

    def switch() -> None:
        """Another runtime's turn, then a few untimed calls; how long it all took is kept apart."""
        nonlocal paused_ns, block_start, deadline, switches
        switches += 1
        began = clock()
        pause()  # type: ignore[misc]
        untimed(REWARM)
        block_start = clock()
        paused_ns += block_start - began
        deadline += block_start - began

    # first pass: outputs and post-processing kept for quality
    for i in range(n):
        if i % check_every == 0 and cancelled():
            stopped = True
            break
        if pause is not None and clock() - block_start >= block_ns:
            switch()
        feed = feeds[i]
        if stage is not None:
            stage(feed)
        t = clock()
        raw = run(feed)
        t_end = clock()
        if j == size:
            cur = buf.grow()
            size, j = cur.size, 0
        cur[j] = t_end - t
        j += 1
        if after_call is not None:
            after_call(i)
        outputs[i] = finish(raw) if finish is not None else raw
        post[i] = clock() - t_end
        completed = i + 1
    if not stopped and (completed < min_calls or t_end < deadline):
        # more passes: size the next chunk from the first pass's pace, so it rarely grows again
        per_call = max((t_end - t_start - paused_ns) // max(completed, 1), 1)
        wanted = max(min_calls - completed, (deadline - t_end) // per_call * 5 // 4 + 1)
        if size - j < wanted:
            cur = buf.grow(max(wanted, buf.chunk))
            size, j = cur.size, 0
            buf.chunk = max(buf.chunk, wanted // 4)
        while not stopped:
            for feed in feeds:
                if completed >= min_calls and t_end >= deadline:
                    break
                if completed % check_every == 0 and cancelled():
                    stopped = True
                    break
                if pause is not None and clock() - block_start >= block_ns:
                    switch()
                if stage is not None:
                    stage(feed)
                t = clock()
                raw = run(feed)
                t_end = clock()
                if j == size:
                    cur = buf.grow()
                    size, j = cur.size, 0
                cur[j] = t_end - t
                j += 1
                if after_call is not None:
                    after_call(completed)
                if finish is not None:
                    finish(raw)
                completed += 1
            else:
                continue
            break
    wall = t_end - t_start - paused_ns
    done_first = min(completed, n)
    return LoopResult(
        latencies_ns=buf.values(completed), first_ns=int(first),
        postprocess_ns=post[:done_first].copy(), outputs=outputs[:done_first],
        wall_ns=int(wall), completed=completed, cancelled=stopped, turns=switches,
    )


def measure_sampled(
    run: Callable[[Any], Any],
    feeds: Sequence[Any],
    *,
    metric: MetricSink,
    warmup: int = 10,
    stage: Callable[[Any], Any] | None = None,
    finish: Callable[[Any], Any] | None = None,
    after_call: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    period_s: float = 0.1,
    t0: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    repeat: int = 1,
    duration_s: float = 0.0,
    turn: Any = None,
) -> tuple[LoopResult, list[TimeSeries]]:
    """`run_timed_loop` with the resource sampler running and latencies streamed by its thread.

    `metric(name, value, x)` receives resource samples (x = seconds since t0) and latencies
    (x = call index); `on_progress(done, total)` is called once per sampling period (with a
    duration, `total` is estimated from the pace so far). This is the whole measurement as the
    runtime nodes do it, and what bench/overhead.py times.
    """
    planned = len(feeds) * max(repeat, 1)
    buffer = LatencyBuffer(planned)
    forwarder = LatencyForwarder(buffer, metric)

    def tick() -> None:
        forwarder()
        if on_progress is None:
            return
        total = planned
        started = buffer.started_ns
        if duration_s > 0 and started is not None and forwarder.sent:
            elapsed = (time.perf_counter_ns() - started) / 1e9
            if elapsed > 0:
                total = max(planned, forwarder.sent, int(forwarder.sent * duration_s / elapsed))
        on_progress(min(forwarder.sent, total), total)

    meter = LoadMeter()
    pause = None
    if turn is not None and turn.shared:  # another runtime's block between ours (engine.turns)
        def pause() -> None:
            meter.stop()
            turn.give()
            turn.take()
            meter.start()

    sampler = ResourceSampler(period_s, t0=t0, sink=metric, on_tick=tick)
    sampler.start()
    meter.start()
    try:
        result = run_timed_loop(run, feeds, warmup=warmup, stage=stage, finish=finish, after_call=after_call,
                                cancelled=cancelled, latencies_ns=buffer, repeat=repeat, duration_s=duration_s,
                                pause=pause, block_s=BLOCK_S)
        meter.stop()
        result.machine_load = meter.load()
    finally:
        resources = sampler.stop()
    return result, resources
