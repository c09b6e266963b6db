"""A guard against a reference-count bug of the pinned PySide6 on CPython 3.11.

shiboken6 6.12.0 returns `None` from every void C++ call without taking a reference to it, and
loses references to True/False on some paths too (measured: a few hundred per second of charts
and panning). That is harmless on CPython >= 3.12, where these singletons are immortal (PEP 683),
but on 3.11 their counts fall until the interpreter aborts with "none_dealloc: deallocating None"
(or "bool_dealloc"). Giving the three singletons a huge count does by hand what 3.12 does for every
immortal object, so they can never reach zero. Nothing else is touched; a no-op on 3.12 and later.
"""

from __future__ import annotations

import ctypes
import sys

IMMORTAL_BOOST = 1 << 60
_done = False


def none_refcount_leaks(calls: int = 64) -> bool:
    """True when a void Qt call costs None a reference (the bug is present in this install)."""
    from PySide6.QtCore import QPointF

    point = QPointF()
    before = sys.getrefcount(None)
    for _ in range(calls):
        point.setX(1.0)
    return sys.getrefcount(None) < before - calls // 2


def protect_none() -> None:
    global _done
    if _done or sys.version_info >= (3, 12):
        return
    for singleton in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(singleton))  # ob_refcnt is PyObject's first field
        if refcount.value < IMMORTAL_BOOST:
            refcount.value += IMMORTAL_BOOST
    _done = True
