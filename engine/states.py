"""Node states as a type, and the one reducer from run events to states.

Every node event that changes a node's state carries it (`event.state`), so the terminal view,
the editor and the report all read the same answer off the same events instead of each deciding
for itself (for instance whether a skipped node was cancelled). Duck-typed on events so that
engine/events.py can import this module and not the other way round.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class NodeState(StrEnum):
    PENDING = "pending"      # in the run, not started yet
    RUNNING = "running"
    DONE = "done"            # ran and produced its outputs
    CACHED = "cached"        # outputs restored from the cache
    FAILED = "failed"
    SKIPPED = "skipped"      # an upstream node did not finish
    CANCELLED = "cancelled"  # the user stopped the run before or while it ran

    @property
    def finished(self) -> bool:
        """Its outputs exist: downstream nodes may use them."""
        return self in (NodeState.DONE, NodeState.CACHED)

    @property
    def over(self) -> bool:
        """It will not change again in this run."""
        return self not in (NodeState.PENDING, NodeState.RUNNING)


def reduce(states: dict[str, NodeState], event: Any) -> NodeState | None:
    """Apply one event to `states` (node id -> state) in place; returns the new state of the
    event's node, or None when the event changes no state (progress, metrics, logs, run end)."""
    if getattr(event, "type", "") == "run_started":
        states.clear()
        states.update(dict.fromkeys(event.order, NodeState.PENDING))
        return None
    state = getattr(event, "state", None)
    node = getattr(event, "node", None)
    if state is None or node is None:
        return None
    states[node] = NodeState(state)
    return states[node]


def states_of(events: Any) -> dict[str, NodeState]:
    """node id -> last state, from a run's events (as read back from events.jsonl)."""
    states: dict[str, NodeState] = {}
    for event in events:
        reduce(states, event)
    return states
