"""The fork server that worker processes come from, startable before anything heavy is imported.

It is a fresh interpreter that imports Heiti and every node kind (engine.worker_preload) once, then
forks a worker per request. Its imports take about as long as the `heiti` command's own, so the
command starts it first thing (this module imports nothing but multiprocessing) and both import
side by side on two cores: the first worker is ready when the graph has been validated.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

START_METHOD = "forkserver"

_preloaded = False


def context(preload: list[str]) -> Any:
    """The fork-server context; its server imports the registered node kinds and `preload` once."""
    global _preloaded
    ctx = mp.get_context(START_METHOD)
    if not _preloaded:  # the server starts once per process; later lists would be ignored
        ctx.set_forkserver_preload(["heiti.engine.worker_preload", *sorted(set(preload))])
        _preloaded = True
    return ctx


def start_fork_server() -> None:
    """Start the fork server now, so that its imports overlap this process's."""
    from multiprocessing import forkserver

    context([])
    forkserver.ensure_running()
