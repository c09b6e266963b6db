"""When CPython's garbage collector runs in Heiti's own processes: rarely while modules load.

Importing pydantic, networkx and the node kinds creates some hundred thousand objects, and
TensorFlow, torch or TVM some million, that live as long as the process. With the default
threshold the collector walks them again and again while they are made (five full passes during
`import tensorflow`: ~0.7 s of a 6 s import on a 2-core machine) and once more at exit.

- The `heiti` command (`begin`, `started`, `ending`): a high first-generation threshold while it
  starts (the collector still runs, rarely, so memory stays bounded whatever a command does), what
  start-up made frozen once it is over (later collections skip it), and everything frozen when the
  command returns (the process is ending; a last walk frees nothing the exit does not). Only the
  console entry point does this: `main()` called in a test or another program leaves the
  collector alone.
- Worker processes (`worker_defaults`, `settle`): the fork server starts them with a high
  threshold, and what a warm-up imported is frozen, so a framework's objects are not walked again
  during a node's run (nor, as pauses, inside its timed loop). A worker is a process of its own:
  its frozen objects go when it ends.
"""

from __future__ import annotations

import gc

#: first-generation threshold while modules load (CPython's default is 700)
STARTUP_THRESHOLD = 50_000
#: a worker's thresholds for its whole life: young objects are walked 70x less often
WORKER_THRESHOLDS = (50_000, 10, 10)

_saved: tuple[int, ...] | None = None  # the usual thresholds, while starting
_began = False


def begin() -> None:
    global _saved, _began
    if not _began:
        _began, _saved = True, gc.get_threshold()
        gc.set_threshold(STARTUP_THRESHOLD, *_saved[1:])


def started() -> None:
    """Start-up is over (a command is about to do its long work): back to the usual thresholds."""
    global _saved
    if _saved is not None:
        gc.freeze()
        gc.set_threshold(*_saved)
        _saved = None


def ending() -> None:
    """The command returned and the process exits: no last collection over what it made."""
    if _began:
        gc.freeze()


def worker_defaults() -> None:
    """In the fork server, after its imports: what it loaded is frozen, and every worker forked
    from it starts with the workers' thresholds."""
    gc.freeze()
    gc.set_threshold(*WORKER_THRESHOLDS)


def settle() -> None:
    """In a worker, after importing ahead for a node: the framework's objects are kept out of
    later collections."""
    gc.freeze()
