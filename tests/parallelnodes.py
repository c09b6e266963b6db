"""Test node kinds for the parallel executor: they record when they ran, crash, or ignore cancel."""

from __future__ import annotations

import os
import signal
import time

from heiti.engine import In, Node, Out
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


ALL = [Stamp, ExclusiveStamp, Segfault, Stubborn]


class BoardStamp(ExclusiveStamp):
    """A measuring node pinned to a board through Ray resources, like a runtime's `ray_resources`."""

    kind = "ptest.board"

    class Params(_P):
        delay: float = Field(0.1, ge=0)
        ray_resources: dict[str, float] = Field(default_factory=dict)


ALL.append(BoardStamp)
