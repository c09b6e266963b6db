"""Imported by `ptest.slowwarm` and by workers warming up for it: takes IMPORT_S, as a framework does."""

import time

IMPORT_S = 2.5
time.sleep(IMPORT_S)


def ready() -> None:
    """The "module:function" form of a warm-up import."""
