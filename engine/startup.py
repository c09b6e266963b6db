"""Garbage collection for the `heiti` command: start-up makes long-lived objects only.

Importing pydantic, networkx, rich and the node kinds creates some hundred thousand objects that
live as long as the process. CPython's collector walks them again and again while they are made,
and once more at exit: on a 2-core machine ~0.2 s to start and ~0.2 s to end a cached run of
one second. So the command raises the first generation's threshold while it starts (the collector
still runs, rarely: memory stays bounded whatever a command does), freezes what start-up made once
it is over (later collections skip it), and freezes everything when the command returns (the
process is ending; a last walk over its objects frees nothing the exit does not).

Only the console entry point does this; `main()` called in a test or another program leaves the
collector alone.
"""

from __future__ import annotations

import gc

#: first-generation threshold while starting (CPython's default is 700)
STARTUP_THRESHOLD = 50_000

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
