"""The board's image: a Debian root file system with the device side's wheels, built once and
cached in the board's folder (build.json says what and how), plus the folder's state file.

The recipe constants below name everything that goes in; changing one makes a cached board stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heiti.nodes.devices.board_host import ARCHES, BoardError, boards_home
from heiti.nodes.devices.board_host import is_our_server as _is_our_server
from heiti.nodes.devices.board_host import say as _say
from heiti.nodes.devices.board_host import tail as _tail

#: bump when the recipe below changes: an older cached board is rebuilt
RECIPE = 1
SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's python3
#: Debian packages in the board: Python, and g++ to link cross-compiled TVM archives at LOAD
DEB_PACKAGES = ("python3", "g++")
#: the device side's wheels. numpy 1.x: tflite-runtime 2.14 (LiteRT's only cp311 aarch64 build;
#: ai-edge-litert has none) is built against numpy 1; onnxruntime and TVM accept numpy 1.26.
WHEELS = (
    "numpy==1.26.4", "onnxruntime==1.32.0", "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1",
    "tflite-runtime==2.14.0", "psutil==7.2.2", "pydantic==2.14.4", "pyserial==3.5", "networkx==3.6.1",
    "zlib-ng==1.1.0",
)
NOBODY = "65534:65534"
SITE = f"usr/local/lib/python{PYTHON}/dist-packages"

#: LiteRT under its current module name, backed by tflite-runtime (same Interpreter API)
LITERT_SHIM = '''"""ai_edge_litert for the emulated board, backed by tflite_runtime (written by heiti board)."""
'''
LITERT_SHIM_INTERPRETER = '''from tflite_runtime.interpreter import *  # noqa: F401,F403
from tflite_runtime.interpreter import Interpreter, OpResolverType, load_delegate  # noqa: F401
'''


def _run(cmd: list[str], what: str, log: Path | None = None, **kwargs: Any) -> None:
    """Run a build step; on failure the error names the step and shows the end of its output."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        if log:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    finally:
        if log:
            out.close()
    if code != 0:
        tail = _tail(log) if log else ""
        raise BoardError(f"{what} failed (exit {code})" + (f":\n{tail}" if tail else ""),
                         f"the full output is in {log}" if log else "")


def debian_mirror() -> str:
    """$HEITI_BOARD_MIRROR, else the Debian mirror this host's apt uses, else deb.debian.org."""
    if os.environ.get("HEITI_BOARD_MIRROR"):
        return os.environ["HEITI_BOARD_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for url in re.findall(r"^\s*(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, flags=re.M):
            if url.rstrip("/").endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


class BoardImage:
    """A board's folder: building its root file system, and reading its build and state files."""

    def __init__(self, arch: str = "aarch64", directory: str | Path | None = None) -> None:
        if arch not in ARCHES:
            raise BoardError(f"unknown board architecture {arch!r}", f"use one of: {', '.join(ARCHES)}")
        self.arch = ARCHES[arch]
        self.dir = Path(directory).expanduser().resolve() if directory else boards_home() / arch
        self.rootfs = self.dir / "rootfs"
        self.wheels = self.dir / "wheels"
        self.build_file = self.dir / "build.json"
        self.state_file = self.dir / "state.json"
        self.log = self.dir / "serve.log"
        self.build_log = self.dir / "build.log"

    # -- building ----------------------------------------------------------------------------------------
    def build_info(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.build_file.read_text())
        except (OSError, ValueError):
            return None
        wanted = {"recipe": RECIPE, "suite": SUITE, "packages": list(DEB_PACKAGES), "wheels": list(WHEELS)}
        if any(info.get(k) != v for k, v in wanted.items()) or not (self.rootfs / "usr/bin/python3").exists():
            return None
        return info

    def build(self, rebuild: bool = False, say: Callable[[str], None] = _say) -> dict[str, Any]:
        """The root file system with the wheels installed, built once (cached); returns build.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            info = None if rebuild else self.build_info()
            if info is not None:
                return info
            if self.running():
                raise BoardError("the board is running; stop it before rebuilding", "heiti board down")
            self.build_log.write_text("")
            started = time.monotonic()
            partial = self.dir / "rootfs.partial"
            _remove_tree(partial)
            tool = self._bootstrap(partial, say)
            rootfs_s = time.monotonic() - started
            t = time.monotonic()
            self._install_wheels(partial, say)
            wheels_s = time.monotonic() - t
            _remove_tree(self.rootfs)
            self.build_file.unlink(missing_ok=True)
            partial.rename(self.rootfs)
            info = {"recipe": RECIPE, "suite": SUITE, "arch": self.arch.name, "packages": list(DEB_PACKAGES),
                    "wheels": list(WHEELS), "tool": tool, "mirror": debian_mirror(), "rootfs_s": round(rootfs_s, 1),
                    "wheels_s": round(wheels_s, 1), "total_s": round(time.monotonic() - started, 1),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            self.build_file.write_text(json.dumps(info, indent=1))
            say(f"built {self.rootfs} in {info['total_s']:.0f} s ({tool}: {rootfs_s:.0f} s, wheels: {wheels_s:.0f} s)")
            return info

    @contextlib.contextmanager
    def _lock(self) -> Any:
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _bootstrap(self, target: Path, say: Callable[[str], None]) -> str:
        mirror = debian_mirror()
        chosen = os.environ.get("HEITI_BOARD_BOOTSTRAP", "")  # mmdebstrap | debootstrap; default: the faster one there is
        if chosen not in ("", "mmdebstrap", "debootstrap"):
            raise BoardError(f"HEITI_BOARD_BOOTSTRAP={chosen!r}", "use mmdebstrap or debootstrap")
        if chosen != "debootstrap" and shutil.which("mmdebstrap"):
            say(f"unpacking Debian {SUITE} {self.arch.debian} into {target} with mmdebstrap (about a minute) …")
            _run(["mmdebstrap", "--mode=root", f"--arch={self.arch.debian}", "--variant=extract",
                  "--include=?essential", f"--include={','.join(DEB_PACKAGES)}", SUITE, str(target), mirror],
                 "mmdebstrap", self.build_log)
            self._finish_extracted(target)
            return "mmdebstrap --variant=extract"
        say(f"bootstrapping Debian {SUITE} {self.arch.debian} into {target} with debootstrap "
            "(its second stage runs under emulation: several minutes; mmdebstrap is much faster) …")
        _run(["debootstrap", f"--arch={self.arch.debian}", "--variant=minbase", "--foreign",
              f"--include={','.join(DEB_PACKAGES)}", SUITE, str(target), mirror], "debootstrap", self.build_log)
        qemu = shutil.which(self.arch.qemu)
        if qemu:
            shutil.copy2(qemu, target / "usr/bin" / Path(qemu).name)
        _run(["chroot", str(target), "/debootstrap/debootstrap", "--second-stage"],
             "debootstrap --second-stage", self.build_log)
        return "debootstrap --foreign + --second-stage"

    def _finish_extracted(self, root: Path) -> None:
        """What the skipped maintainer scripts would have done and the board needs."""
        for name in ("passwd", "group"):
            master = root / f"usr/share/base-passwd/{name}.master"
            if master.exists() and not (root / "etc" / name).exists():
                shutil.copy2(master, root / "etc" / name)
        (root / "tmp").chmod(0o1777)
        _run(["chroot", str(root), "/sbin/ldconfig"], "ldconfig in the board", self.build_log)
        self._compile(root / f"usr/lib/python{PYTHON}", f"/usr/lib/python{PYTHON}")

    def _compile(self, folder: Path, shown_as: str) -> None:
        """Byte-compile on the host (same bytecode when the host runs the board's Python): the
        server runs as nobody and could not write the cache itself, so every start would recompile."""
        if f"{sys.version_info[0]}.{sys.version_info[1]}" != PYTHON:
            return
        subprocess.call([sys.executable, "-m", "compileall", "-q", "-j", "0", "-d", shown_as, str(folder)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _pip(self, *args: str) -> list[str]:
        platforms = [f"--platform={p}" for p in self.arch.wheel_platforms]
        return [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--only-binary=:all:", *platforms,
                f"--python-version={PYTHON}", "--implementation=cp", f"--abi=cp{PYTHON.replace('.', '')}",
                "--abi=abi3", "--abi=none"]

    def _install_wheels(self, root: Path, say: Callable[[str], None]) -> None:
        self.wheels.mkdir(parents=True, exist_ok=True)
        say(f"downloading the device side's {self.arch.name} wheels into {self.wheels} …")
        _run(self._pip("download", "-d", str(self.wheels), *WHEELS), "pip download", self.build_log)
        say("installing them into the board …")
        site = root / SITE
        site.mkdir(parents=True, exist_ok=True)
        _run(self._pip("install", "--no-index", "--find-links", str(self.wheels), "--target", str(site),
                       "--no-compile", *WHEELS), "pip install --target", self.build_log)
        _remove_tree(site / "bin")  # console scripts with this host's interpreter in their #! line
        # the board runs TVM's runtime library only (TVM_USE_RUNTIME_LIB=1): the compiler half
        # (240 MB, ~30 s to load under emulation) is never used there
        (site / "tvm/lib/libtvm_compiler.so").unlink(missing_ok=True)
        shim = site / "ai_edge_litert"
        shim.mkdir(exist_ok=True)
        (shim / "__init__.py").write_text(LITERT_SHIM)
        (shim / "interpreter.py").write_text(LITERT_SHIM_INTERPRETER)
        self._compile(site, "/" + SITE)

    def install_heiti(self) -> None:
        """Heiti's engine/ and nodes/ (pure Python; the device side needs no torch or TensorFlow)
        under /opt/heiti/heiti in the board: this host's version, copied at every `up`."""
        import heiti.engine
        import heiti.nodes

        dest = self.rootfs / "opt/heiti/heiti"
        _remove_tree(dest)
        dest.mkdir(parents=True)
        for package in (heiti.engine, heiti.nodes):
            shutil.copytree(Path(package.__file__).parent, dest / package.__name__.rpartition(".")[2],
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self._compile(dest, "/opt/heiti/heiti")
        models = self.rootfs / "var/lib/heiti/models"
        models.mkdir(parents=True, exist_ok=True)
        uid, gid = (int(x) for x in NOBODY.split(":"))
        for folder in (models.parent, models):
            os.chown(folder, uid, gid)

    # -- running -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> dict[str, Any] | None:
        """The state of a live server started by this board, else None (a stale state is removed)."""
        state = self.state()
        if state is None:
            return None
        if _is_our_server(int(state.get("pid", 0)), str(self.rootfs)):
            return state
        self.state_file.unlink(missing_ok=True)
        return None


def _remove_tree(path: Path) -> None:
    """rm -rf that refuses to cross into a mount (a board's mounts live in the server's own
    namespace, but a crashed debootstrap can leave /proc mounted in its target)."""
    if not path.exists() and not path.is_symlink():
        return
    for sub in ("proc", "sys", "dev", "dev/pts", "tmp"):
        if os.path.ismount(path / sub):
            subprocess.call(["umount", "-l", str(path / sub)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if os.path.ismount(path / sub):
                raise BoardError(f"{path / sub} is still mounted; not deleting {path}", f"umount {path / sub}")
    shutil.rmtree(path)

