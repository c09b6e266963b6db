"""The pinned PySide6 must not leak references to None (shiboken6 6.12.0 does on Python 3.11 and
aborts the editor within seconds of panning; 6.11.3 does not)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
calls = sys.getrefcount(None) + 50_000  # more void calls than None has references
from PySide6.QtCore import QPointF
p = QPointF()
before = sys.getrefcount(None)
for _ in range(calls):
    p.setX(1.0)  # a void call: leaked one reference to None on affected releases
print(before - sys.getrefcount(None))
"""


def test_void_qt_calls_do_not_leak_none():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert abs(int(out.stdout.strip())) < 100
