"""`heiti board up/status/down`: an emulated Arm Linux board on this machine, from Debian's packages.

A board is a Debian arm64 root file system run through qemu-user (binfmt_misc), with `heiti serve`
started inside it on 127.0.0.1. Runtimes reach it like any device (a `target.tcp` node); their code
runs as aarch64 code, so a TVM module cross-compiled for aarch64 is linked and run there, and ONNX
Runtime and LiteRT run their aarch64 builds. Timings are emulated: fit for relative comparisons
and for correctness on the target ISA, not for absolute speed. The server says so in its HELLO
(`emulated: true`, `emulator`), and measurements and reports carry it.

Built once and cached under ~/.cache/heiti/boards/<arch>/ (or --dir):

    rootfs/      the Debian file system (python3, g++ to link TVM archives at LOAD), plus the
                 device side's aarch64 wheels in /usr/local/lib/python3.11/dist-packages and
                 Heiti's own engine/ and nodes/ under /opt/heiti (copied again at every `up`)
    wheels/      the aarch64 wheels, downloaded on this host (pip in the board has no CA bundle)
    build.json   what was built, how, and how long it took
    state.json   the running server: pid, port, arch, started
    serve.log    the server's output

The file system is made by `mmdebstrap --variant=extract` when mmdebstrap is installed: packages
are only unpacked, natively, so nothing runs under emulation (about a minute). Without it,
`debootstrap --foreign` plus its second stage under emulation does the same in 11-30 minutes.
The server runs in its own mount namespace (`unshare --mount`): /proc, /sys, a small /dev and /tmp
are mounted there only, so they vanish with the process and never outlive `board down`. It runs
as `nobody` inside the chroot, listens on loopback only, and allows native code (TVM modules)
because the host side that uploads them is this machine.

This module is the CLI; board_host.py checks the host, board_image.py builds the image, board_runtime.py
starts, probes and stops the server.
"""

from __future__ import annotations

import json
from typing import Any

from heiti.nodes.devices.board_host import (
    ARCHES,
    INSTALL_HINT,
    Arch,
    BoardError,
    boards_home,
    check_host,
    emulator_version,
    ensure_binfmt,
)
from heiti.nodes.devices.board_host import say as _say
from heiti.nodes.devices.board_image import (
    DEB_PACKAGES,
    NOBODY,
    PYTHON,
    RECIPE,
    SITE,
    SUITE,
    WHEELS,
    BoardImage,
    debian_mirror,
)
from heiti.nodes.devices.board_runtime import DEFAULT_PORT, HELLO_TIMEOUT_S, Board

__all__ = [
    "ARCHES", "DEB_PACKAGES", "DEFAULT_PORT", "HELLO_TIMEOUT_S", "INSTALL_HINT", "NOBODY", "PYTHON", "RECIPE", "SITE",
    "SUITE", "WHEELS", "Arch", "Board", "BoardError", "BoardImage", "boards_home", "check_host", "debian_mirror",
    "emulator_version", "ensure_binfmt", "main",
]


# --- the CLI -------------------------------------------------------------------------------------------------
def _print_status(status: dict[str, Any]) -> None:
    build = status.get("build") or {}
    print(f"board {status['arch']}: {status['dir']}")
    if build:
        print(f"  built      {build.get('built', '?')} with {build.get('tool', '?')} in {build.get('total_s', '?')} s")
    else:
        print("  built      no (`heiti board up` builds it)")
    if not status["running"]:
        print("  running    no")
        return
    device = status.get("device")
    print(f"  running    pid {status['pid']}, tcp {status['address']}")
    print(f"  emulator   {status.get('emulator') or '?'}")
    if isinstance(device, dict):
        print(f"  device     {device.get('system', '?')} {device.get('machine', '?')}, Python {device.get('python', '?')}, "
              f"emulated: {str(bool(device.get('emulated'))).lower()}")
        print(f"  runtimes   {', '.join(device.get('runtimes') or []) or 'none'}")
    elif device:
        print(f"  device     {device}")
    print(f"  in a graph target.tcp with address {status['address']} (timeout_s ≥ 120: loads are slow under emulation)")


def main(args: Any) -> int:
    """Entry point of `heiti board up|status|down` (arguments defined in engine/cli.py)."""
    try:
        board = Board(getattr(args, "arch", "aarch64") or "aarch64", getattr(args, "dir", None))
        command = args.board_command
        if command == "up":
            status = board.up(port=args.port, rebuild=getattr(args, "rebuild", False))
        elif command == "down":
            board.down()
            status = board.status(probe=False)
        else:
            status = board.status()
    except BoardError as err:
        _say(str(err))
        if err.hint:
            _say(err.hint)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(status, indent=1, default=str))
    else:
        _print_status(status)
    return 0 if command != "status" or status["running"] else 1
