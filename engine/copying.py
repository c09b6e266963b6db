"""Copying a node's files, and knowing afterwards that nobody has written them since.

Standard library only: the cache uses it, and so does the prefetch thread of `heiti run`, which
copies while the command's main thread is still importing Heiti (engine.prefetch).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

_FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, XFS)

#: how long `tick_past` waits for the file-system clock to move past a set of ctimes
TICK_WAIT_S = 0.2


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file as a reflink where the file system can, else byte by byte.

    Never a hard link: a run folder's files may be rewritten by a later run, and a hard link
    would carry that write into the cache entry.
    """
    with open(src, "rb") as source, open(dst, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), _FICLONE, source.fileno())
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)  # sendfile on Linux: the bytes never pass through Python


def copy_tree(src: Path, dst: Path, mode: int) -> list[Path]:
    """Copy the files under `src` to `dst` with `mode` (symlinks are left out); the files written."""
    written = []
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_symlink():
            continue  # a node's symlink may point anywhere; the cache holds only its own bytes
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_file(path, target)
            os.chmod(target, mode)
            written.append(target)
    return written


def tick_past(probe: Path, latest_ctime_ns: int) -> bool:
    """Wait until the kernel's ctime clock, read on `probe`, is past `latest_ctime_ns`.

    The kernel stamps ctime from a coarse clock: a write in the same tick as a file's recorded
    identity would keep that identity. Once this returns True, any later write to those files
    moves their ctime off what was recorded. False if the clock did not move in TICK_WAIT_S.
    """
    deadline = time.monotonic() + TICK_WAIT_S
    mode = os.stat(probe).st_mode & 0o7777
    while True:
        os.chmod(probe, mode)  # moves the probe's ctime to the clock's current tick
        if os.stat(probe).st_ctime_ns > latest_ctime_ns:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
