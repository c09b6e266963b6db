"""The host side of an emulated board: which architectures there are, what this machine must
have (root, qemu-user-static, a bootstrapper, binfmt_misc), and the process checks that tell the
board's server from a recycled pid. Errors say what to install or run (BoardError.hint).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install qemu-user-static binfmt-support mmdebstrap   (or debootstrap instead of mmdebstrap)"


@dataclass(frozen=True)
class Arch:
    name: str  # as platform.machine() says on the board
    debian: str  # Debian's architecture name
    binfmt: str  # the binfmt_misc entry qemu-user-static registers
    qemu: str  # the static emulator
    wheel_platforms: tuple[str, ...]


ARCHES = {
    "aarch64": Arch("aarch64", "arm64", "qemu-aarch64", "qemu-aarch64-static",
                    ("manylinux_2_36_aarch64", "manylinux_2_34_aarch64", "manylinux_2_28_aarch64",
                     "manylinux_2_27_aarch64", "manylinux_2_24_aarch64", "manylinux2014_aarch64",
                     "linux_aarch64")),
}


class BoardError(RuntimeError):
    """Something the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def boards_home() -> Path:
    return Path(os.environ.get("HEITI_BOARDS") or "~/.cache/heiti/boards").expanduser()


def say(message: str) -> None:
    print(f"heiti board: {message}", file=sys.stderr, flush=True)


def tail(path: Path | None, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


# --- host checks -----------------------------------------------------------------------------------------
def check_host(arch: Arch) -> None:
    """Root, qemu-user-static, a bootstrapper, and binfmt_misc able to run the arch's binaries."""
    if sys.platform != "linux":
        raise BoardError("an emulated board needs Linux (binfmt_misc, chroot, mount namespaces)")
    if os.geteuid() != 0:
        raise BoardError("an emulated board needs root (chroot, mounts)", "run `sudo heiti board up`")
    if not shutil.which(arch.qemu) and not Path(f"/usr/libexec/qemu-binfmt/{arch.name}-binfmt-P").exists():
        raise BoardError(f"qemu-user-static is not installed ({arch.qemu} not found)", INSTALL_HINT)
    if not shutil.which("mmdebstrap") and not shutil.which("debootstrap"):
        raise BoardError("neither mmdebstrap nor debootstrap is installed", INSTALL_HINT)
    if not shutil.which("unshare") or not shutil.which("chroot"):
        raise BoardError("unshare and chroot (util-linux, coreutils) are needed", "apt-get install util-linux coreutils")
    ensure_binfmt(arch)


def ensure_binfmt(arch: Arch) -> None:
    """Register qemu for the arch in binfmt_misc if it is not (mounting binfmt_misc first)."""
    root = Path("/proc/sys/fs/binfmt_misc")
    entry = root / arch.binfmt
    if _binfmt_enabled(entry):
        return
    if not (root / "register").exists():
        subprocess.call(["mount", "binfmt_misc", "-t", "binfmt_misc", str(root)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _binfmt_enabled(entry) and shutil.which("update-binfmts"):
        subprocess.call(["update-binfmts", "--enable", arch.binfmt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = Path(f"/usr/lib/binfmt.d/{arch.binfmt}.conf")
    if not _binfmt_enabled(entry) and conf.exists() and (root / "register").exists():
        with contextlib.suppress(OSError):
            (root / "register").write_text(conf.read_text().strip() + "\n")
    if not _binfmt_enabled(entry):
        raise BoardError(f"binfmt_misc cannot run {arch.name} programs here ({entry} is missing or disabled)",
                         f"as root: mount binfmt_misc -t binfmt_misc {root}; update-binfmts --enable {arch.binfmt} "
                         f"(a container needs binfmt_misc from its host); packages: {INSTALL_HINT}")


def _binfmt_enabled(entry: Path) -> bool:
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def emulator_version(arch: Arch) -> str:
    try:
        out = subprocess.run([arch.qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "qemu-user"
    except (OSError, subprocess.SubprocessError):
        return "qemu-user"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def is_our_server(pid: int, rootfs: str) -> bool:
    """The pid is alive and is the board's server (not a recycled pid): it is in the board's chroot."""
    if pid <= 0 or not alive(pid):
        return False
    try:
        root = os.readlink(f"/proc/{pid}/root")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return root == rootfs or (b"heiti-board" in cmdline and rootfs.encode() in cmdline)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0
