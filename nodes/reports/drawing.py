"""The report's figures drawn at the same time, in forked copies of the process.

A report's figures are independent, each a second or less of matplotlib on one core (the demo's
eleven: 4.9 s one after the other). matplotlib is not thread-safe, so they are drawn in processes:
`render` collects the plot calls (`deferral.deferred`), and `draw_all` forks helpers (up to the cores
this process may use) that share the calls by taking figure numbers from one pipe, and send back
PNG bytes only (through a temporary file) — nothing is pickled. The parent draws too, and draws
again a figure a helper could not deliver; a figure that fails is None, and `render` then builds
the sections the ordinary way, so the error is handled (and shown) as it always was.

Forking is only done from a process's main thread (a Heiti worker, the CLI); in the editor the
report runs on a thread beside Qt, and the figures are drawn one after the other there. Other
threads may exist (OpenVINO keeps an idle thread pool once imported, rich a refresh thread): a lock
one of them held at the fork could hang a helper, so a helper that outlives the parent's own
drawing by HELPER_GRACE_S is killed and its figures drawn by the parent.

The parent learns that a helper is done from a pipe whose only write end the helper holds: it
reads as ended the moment the helper exits, so waiting is one `select`: no loop of short sleeps
(a hundred wake-ups a report, and up to an interval late at the end of each wait).
"""

from __future__ import annotations

import os
import selectors
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

_HEADER = struct.Struct("<iq")  # figure number, PNG length (-1: failed)
_TOKEN = struct.Struct("<i")
_MAX_FIGURES = 4096  # their numbers fit a pipe's buffer, written before any helper reads
HELPER_GRACE_S = 10.0
#: processes that drew the last figures in this process (the report says it in its log line)
last_processes = 0
#: the helpers' pids of the last figures drawn (all reaped when draw_all returns)
last_helpers: list[int] = []
#: CPU seconds the last figures took: (this process, its helpers together)
last_cpu = (0.0, 0.0)


def _helpers_wanted(count: int) -> int:
    if count < 2 or count > _MAX_FIGURES or not hasattr(os, "fork"):
        return 0
    if threading.current_thread() is not threading.main_thread():
        return 0  # a report on a worker thread (the editor's, beside Qt): no fork there
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(cores, count) - 1)


def draw_all(calls: Sequence[Callable[[], bytes]]) -> list[bytes | None]:
    """Each call's PNG bytes, in order, drawn by this process and forked helpers at once; None
    for a call that raised (the caller draws it again where its error is handled)."""
    global last_cpu
    cpu, children = time.process_time(), _children_cpu()
    try:
        return _draw_all(calls)
    finally:
        last_cpu = (time.process_time() - cpu, _children_cpu() - children)


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _draw_all(calls: Sequence[Callable[[], bytes]]) -> list[bytes | None]:
    global last_processes, last_helpers
    helpers = _helpers_wanted(len(calls))
    last_processes, last_helpers = helpers + 1, []
    if not helpers:
        return [_try(call) for call in calls]
    tokens_r, tokens_w = os.pipe()
    os.write(tokens_w, b"".join(_TOKEN.pack(i) for i in range(len(calls))))  # well under a pipe's buffer
    results: list[tuple[Any, int, int]] = []  # (the helper's file, its pid, the read end of its done pipe)
    for _ in range(helpers):
        # a file, not a pipe: a helper never waits for the parent to read (the parent is drawing too)
        out = tempfile.TemporaryFile()
        done_r, done_w = os.pipe()  # the helper holds the only write end: it reads as ended when the helper is
        try:
            pid = os.fork()
        except OSError:  # no memory or process slot for one more: the helpers there are draw with this one
            out.close()
            os.close(done_r)
            os.close(done_w)
            break
        if pid == 0:  # a helper: draw what it takes, write it, leave without running anything else
            code = 0
            try:
                os.close(tokens_w)
                _serve(calls, tokens_r, out.fileno())
            except BaseException:  # noqa: BLE001 - the parent draws whatever did not arrive
                code = 1
            finally:
                os._exit(code)
        os.close(done_w)  # before the next fork, so that no other helper holds it open
        results.append((out, pid, done_r))
    os.close(tokens_w)  # the helpers hold no write end either: an empty pipe now reads as the end
    last_helpers = [pid for _, pid, _ in results]
    last_processes = len(results) + 1
    pngs: list[bytes | None] = [None] * len(calls)
    started = time.monotonic()
    try:
        while token := _read_exactly(tokens_r, _TOKEN.size):
            (index,) = _TOKEN.unpack(token)
            pngs[index] = _try(calls[index])
    finally:
        os.close(tokens_r)
        # a helper gets as long again as this process took, and HELPER_GRACE_S more; one that hangs
        # (a lock some native thread held when it was forked) is killed and its figures drawn here
        deadline = time.monotonic() + (time.monotonic() - started) + HELPER_GRACE_S
        ended = _wait_for_ends([done for _, _, done in results], deadline)
        for out, pid, done in results:
            os.close(done)
            _reap(pid, done in ended)
            out.seek(0)
            _collect(out.fileno(), pngs)
            out.close()
    return [png if png is not None else _try(call) for png, call in zip(pngs, calls, strict=True)]


def _try(call: Callable[[], bytes]) -> bytes | None:
    try:
        return call()
    except Exception:  # noqa: BLE001 - reported as None: the caller redraws it the ordinary way
        return None


def _wait_for_ends(fds: list[int], deadline: float) -> set[int]:
    """The pipes that read as ended (their helpers exited) by `deadline`, waiting for no more."""
    ended: set[int] = set()
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while len(ended) < len(fds) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                if not os.read(key.fd, 4096):  # a helper writes nothing there: this is its end
                    selector.unregister(key.fd)
                    ended.add(key.fd)
    return ended


def _reap(pid: int, ended: bool) -> None:
    """Reap a helper; kill it first if its pipe did not end in time (it hangs). One already
    reaped elsewhere is fine."""
    try:
        if not ended:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # after the end of its pipe the helper is exiting: its status comes at once
    except (ChildProcessError, ProcessLookupError):
        pass


def _serve(calls: Sequence[Callable[[], bytes]], tokens: int, out: int) -> None:
    while token := _read_exactly(tokens, _TOKEN.size):
        (index,) = _TOKEN.unpack(token)
        try:
            png = calls[index]()
        except Exception:  # noqa: BLE001 - the parent draws it again and shows the error
            os.write(out, _HEADER.pack(index, -1))
            continue
        _write_all(out, _HEADER.pack(index, len(png)) + png)


def _collect(fd: int, pngs: list[bytes | None]) -> None:
    while header := _read_exactly(fd, _HEADER.size):
        index, size = _HEADER.unpack(header)
        if size < 0:
            continue
        data = _read_exactly(fd, size)
        if len(data) == size:
            pngs[index] = data


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes, or fewer at the end of the pipe (b"" when it was already over)."""
    parts, got = [], 0
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
