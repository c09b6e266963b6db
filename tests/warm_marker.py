"""Imported by a worker warming up for `ptest.warm`: remembers when and where (never import it elsewhere)."""

import os
import time

IMPORTED_AT = time.time()
PID = os.getpid()


def ready() -> None:
    """The "module:function" form of a warm-up import: called once the module is in."""
