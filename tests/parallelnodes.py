"""Test node kinds for the parallel executor: they record when they ran, crash, or ignore cancel."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from heiti.engine import In, Measurements, Node, Out
from heiti.engine.measurements import ClassificationQuality, LatencyStats, MeasurementsFile
from heiti.engine.payloads import Value
from pydantic import BaseModel, ConfigDict, Field


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stamp(Node):
    """Sleeps, then outputs [start, end, pid] in wall-clock seconds (comparable across processes)."""

    kind = "ptest.stamp"
    category = "Test"

    class Params(_P):
        delay: float = Field(0.5, ge=0)

    inputs = {"x": In(Value, required=False)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, **inputs):
        start = time.time()
        ctx.progress(0.0, "sleeping")
        ctx.metric("slept", self.params.delay)
        time.sleep(self.params.delay)
        return {"out": Value(value=[start, time.time(), os.getpid()])}


class ExclusiveStamp(Stamp):
    """A Stamp that, like a runtime measuring, must run alone."""

    kind = "ptest.exclusive"
    exclusive = True


class Segfault(Node):
    """Dies of SIGSEGV, as a native crash in a framework would."""

    kind = "ptest.segfault"
    category = "Test"
    outputs = {"out": Out(Value)}

    def run(self, ctx):
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
        return {"out": Value(value=0)}


class Stubborn(Node):
    """Sleeps without ever looking at the cancel flag."""

    kind = "ptest.stubborn"
    category = "Test"
    outputs = {"out": Out(Value)}

    def run(self, ctx):
        ctx.progress(0.0, "not listening")
        time.sleep(60)
        return {"out": Value(value=0)}


class WarmStamp(Stamp):
    """A Stamp whose run needs a module a worker can import ahead (tests/warm_marker.py); outputs
    [start, end, pid, imported before the run started, when it was imported]."""

    kind = "ptest.warm"
    warm_imports = ("tests.warm_marker:ready",)

    def run(self, ctx, **inputs):
        import sys

        marker = sys.modules.get("tests.warm_marker")
        before = marker is not None
        out = super().run(ctx, **inputs)["out"].value
        from tests import warm_marker

        return {"out": Value(value=[*out, before, warm_marker.IMPORTED_AT])}


class SlowWarmStamp(Stamp):
    """A Stamp whose run needs a module that takes seconds to import (tests/slow_marker.py)."""

    kind = "ptest.slowwarm"
    warm_imports = ("tests.slow_marker:ready",)

    def run(self, ctx, **inputs):
        from tests import slow_marker  # noqa: F401 - seconds, unless this worker made it ahead

        return super().run(ctx, **inputs)


class BadWarmStamp(Stamp):
    """A Stamp whose declared warm-up import does not exist: the node itself must not mind."""

    kind = "ptest.badwarm"
    warm_imports = ("tests.no_such_module_here",)


#: what `PrepStamp.prepare_ahead` saw, in the worker process that ran it
PREPARED: dict = {}


class PrepStamp(Stamp):
    """A Stamp with a second input that prepares ahead with what it has; outputs [start, end, pid,
    what prepare_ahead saw in this process (or None)]."""

    kind = "ptest.prep"
    inputs = {"x": In(Value, required=False), "data": In(Value, required=False)}

    @classmethod
    def prepare_ahead(cls, params, inputs):
        PREPARED.update(ports=sorted(inputs), data=inputs["data"].value, at=time.time(), pid=os.getpid())

    def run(self, ctx, **inputs):
        out = super().run(ctx, **inputs)["out"].value
        return {"out": Value(value=[*out, dict(PREPARED) or None])}


ALL = [Stamp, ExclusiveStamp, Segfault, Stubborn, WarmStamp, SlowWarmStamp, BadWarmStamp, PrepStamp]


class BoardStamp(ExclusiveStamp):
    """A measuring node pinned to a board through Ray resources, like a runtime's `ray_resources`."""

    kind = "ptest.board"

    class Params(_P):
        delay: float = Field(0.1, ge=0)
        ray_resources: dict[str, float] = Field(default_factory=dict)


ALL.append(BoardStamp)


class FakeRuntime(Node):
    """Writes a measurements file with the figures its params name, as a runtime would."""

    kind = "ptest.runtime"
    category = "Test"
    exclusive = True

    class Params(_P):
        accuracy: float = 0.9
        latency_ms: float = 1.0
        size_bytes: int = 1000

    inputs = {"x": In(Value, required=False)}
    outputs = {"measurements": Out(Measurements)}

    def run(self, ctx, **inputs):
        p = self.params
        lat = LatencyStats(mean=p.latency_ms, std=0, median=p.latency_ms, p90=p.latency_ms, p99=p.latency_ms,
                           min=p.latency_ms, max=p.latency_ms, count=1)
        record = MeasurementsFile(node=ctx.node_id, runtime="fake", label=ctx.node_id, latency_ms=lat,
                                  model_size_bytes=p.size_bytes, classification=ClassificationQuality(accuracy=p.accuracy))
        path = ctx.workdir / "measurements.json"
        record.save(path)
        return {"measurements": Measurements(path=path, runtime="fake")}

    def publish(self, run_dir, node_id, outputs):
        dest = Path(run_dir) / "measurements" / f"{node_id}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(outputs["measurements"].path, dest)


ALL.append(FakeRuntime)


class TurnTaker(Node):
    """A measuring node that holds the machine for `blocks` turns of `block` seconds each (busy, not
    sleeping) and outputs [[start, end], ...] of its turns in wall-clock seconds, and whether it shared."""

    kind = "ptest.turns"
    category = "Test"
    exclusive = True
    takes_turns = True

    class Params(_P):
        blocks: int = 4
        block: float = 0.1
        meet: str = ""  # a folder where the nodes of one test wait for each other before their first turn
        peers: int = 1
        prepare: float = 0.0  # seconds of preparation (as a runtime's loading) before the first turn

    inputs = {"x": In(Value, required=False)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, **inputs):
        if self.params.meet:
            meet = Path(self.params.meet)
            (meet / ctx.node_id).touch()
            deadline = time.time() + 30
            while len(list(meet.iterdir())) < self.params.peers and time.time() < deadline:
                time.sleep(0.005)
        prepared = [time.time()]
        time.sleep(self.params.prepare)
        prepared.append(time.time())
        spans = []
        for _ in range(self.params.blocks):
            ctx.turn.take()
            ctx.check_cancelled()
            start = time.time()
            while time.time() - start < self.params.block:
                pass
            spans.append([start, time.time()])
            ctx.turn.give()
        return {"out": Value(value={"spans": spans, "shared": ctx.turn.shared, "prepared": prepared})}


ALL.append(TurnTaker)
