"""Structured run events: plain dataclasses, delivered to subscribers, written as JSON lines.

The CLI renders them as progress bars, the editor's bridge re-emits them as Qt signals, and
`events.jsonl` keeps them for later. Nothing here knows about either consumer. Events that change
a node's state carry it (`state`, a NodeState); engine/states.py reduces them to per-node states.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

from heiti.engine.states import NodeState


@dataclass
class Event:
    type: ClassVar[str] = "event"
    t: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    graph: str
    out_dir: str
    order: list[str]


@dataclass
class NodeStarted(Event):
    type: ClassVar[str] = "node_started"
    node: str
    kind: str
    key: str = ""
    state: NodeState = field(default=NodeState.RUNNING, kw_only=True)


@dataclass
class NodeProgress(Event):
    type: ClassVar[str] = "node_progress"
    node: str
    fraction: float
    message: str = ""


@dataclass
class NodeMetric(Event):
    """One sample of a named series (latency_ms, cpu_percent, rss_mb, loss, ...).

    `x` is the sample's position: seconds on the run clock for resource samples, the inference
    index or epoch for others. `source` tells whose number it is ("host" or a device name).
    """

    type: ClassVar[str] = "node_metric"
    node: str
    name: str
    value: float
    x: float = 0.0
    source: str = "host"


@dataclass
class NodeLog(Event):
    type: ClassVar[str] = "node_log"
    node: str
    level: str
    message: str


@dataclass
class NodeFinished(Event):
    type: ClassVar[str] = "node_finished"
    node: str
    duration_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    state: NodeState = field(default=NodeState.DONE, kw_only=True)


@dataclass
class NodeCached(Event):
    type: ClassVar[str] = "node_cached"
    node: str
    key: str
    summary: dict[str, Any] = field(default_factory=dict)
    state: NodeState = field(default=NodeState.CACHED, kw_only=True)


@dataclass
class NodeFailed(Event):
    type: ClassVar[str] = "node_failed"
    node: str
    error_type: str
    message: str
    traceback: str = ""
    state: NodeState = field(default=NodeState.FAILED, kw_only=True)


@dataclass
class NodeSkipped(Event):
    type: ClassVar[str] = "node_skipped"
    node: str
    reason: str
    state: NodeState = field(default=NodeState.SKIPPED, kw_only=True)


@dataclass
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    status: str  # ok | failed | cancelled
    duration_s: float
    counts: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted, NodeStarted, NodeProgress, NodeMetric, NodeLog, NodeFinished,
        NodeCached, NodeFailed, NodeSkipped, RunFinished,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event read back from events.jsonl."""
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    if "state" in names:
        try:
            values["state"] = NodeState(values["state"]) if "state" in values else _legacy_state(data)
        except ValueError:  # a state this Heiti does not know: keep the event's usual one
            values.pop("state", None)
        if values.get("state") is None:
            values.pop("state", None)
    return cls(**values)


def _legacy_state(data: dict[str, Any]) -> NodeState | None:
    """Files written before events carried states: a cancelled node was a failure of type Cancelled."""
    if data["type"] == NodeFailed.type and data.get("error_type") == "Cancelled":
        return NodeState.CANCELLED
    return None


Subscriber = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers; safe to emit from several threads at once."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(event)


class JsonlWriter:
    """Appends events to a file, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), default=str)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                if not isinstance(event, NodeMetric | NodeProgress):
                    self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_events(path: Path) -> list[Event]:
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            events.append(event_from_dict(json.loads(line)))
    return events
