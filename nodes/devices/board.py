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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: bump when the recipe below changes: an older cached board is rebuilt
RECIPE = 1
SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's python3
DEFAULT_PORT = 7080
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
HELLO_TIMEOUT_S = 300.0
INSTALL_HINT = "apt-get install qemu-user-static binfmt-support mmdebstrap   (or debootstrap instead of mmdebstrap)"

#: LiteRT under its current module name, backed by tflite-runtime (same Interpreter API)
LITERT_SHIM = '''"""ai_edge_litert for the emulated board, backed by tflite_runtime (written by heiti board)."""
'''
LITERT_SHIM_INTERPRETER = '''from tflite_runtime.interpreter import *  # noqa: F401,F403
from tflite_runtime.interpreter import Interpreter, OpResolverType, load_delegate  # noqa: F401
'''

#: runs on the host inside `unshare --mount`: mounts that only the server sees, then the chroot.
#: No /sys: ONNX Runtime's cpuinfo reads the host's x86 topology there and crashes under qemu.
_START_SCRIPT = r'''
set -e
r="$1"; shift
mount -t proc proc "$r/proc"
mount -t tmpfs -o mode=755,size=1m dev "$r/dev"
for n in null zero full random urandom; do : > "$r/dev/$n"; mount --bind "/dev/$n" "$r/dev/$n"; done
mkdir -p "$r/dev/shm"; mount -t tmpfs -o mode=1777 shm "$r/dev/shm"
mount -t tmpfs -o mode=1777 tmp "$r/tmp"
exec chroot --userspec=''' + NOBODY + r''' "$r" "$@"
'''


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


def _say(message: str) -> None:
    print(f"heiti board: {message}", file=sys.stderr, flush=True)


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


def _tail(path: Path | None, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


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


# --- the board --------------------------------------------------------------------------------------------
class Board:
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

    def up(self, port: int = DEFAULT_PORT, rebuild: bool = False, timeout_s: float = HELLO_TIMEOUT_S,
           say: Callable[[str], None] = _say) -> dict[str, Any]:
        """Build (once), then start `heiti serve` in the board and wait for its HELLO."""
        check_host(self.arch)
        state = self.running()
        if state is not None:
            if int(state["port"]) != port:
                raise BoardError(f"the board already runs on port {state['port']}",
                                 "use that port, or `heiti board down` first")
            return self.status()
        started = time.monotonic()
        build = self.build(rebuild=rebuild, say=say)
        self.install_heiti()
        if not _port_free(port):
            raise BoardError(f"port {port} on 127.0.0.1 is taken", "pick another with --port")
        emulator = emulator_version(self.arch)
        command = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8",
                   "PYTHONPATH=/opt/heiti", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "TVM_USE_RUNTIME_LIB=1",
                   f"HEITI_EMULATOR={emulator}", f"HEITI_BOARD={self.arch.name}",
                   "python3", "-m", "heiti.engine.cli", "serve", "--tcp", f"127.0.0.1:{port}",
                   "--workdir", "/var/lib/heiti/models", "--allow-native"]
        say(f"starting heiti serve in the board on 127.0.0.1:{port} (Python under emulation: ~30 s) …")
        with open(self.log, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} board up, port {port}\n".encode())
            log.flush()
            proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _START_SCRIPT,
                                     "heiti-board", str(self.rootfs), *command],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        state = {"pid": proc.pid, "port": port, "address": f"127.0.0.1:{port}", "arch": self.arch.name,
                 "rootfs": str(self.rootfs), "emulator": emulator, "started": time.time()}
        self.state_file.write_text(json.dumps(state, indent=1))
        try:
            info = self._wait_for_hello(proc, port, timeout_s)
        except BaseException:
            self.down(quiet=True)
            raise
        state["device"] = info
        state["up_s"] = round(time.monotonic() - started, 1)
        state["build"] = build
        self.state_file.write_text(json.dumps(state, indent=1))
        return self.status(probe=False) | {"device": info, "up_s": state["up_s"]}

    def _wait_for_hello(self, proc: subprocess.Popen, port: int, timeout_s: float) -> dict[str, Any]:
        from heiti.engine.payloads import TargetHandle
        from heiti.nodes.devices.client import DeviceClient, DeviceError

        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise BoardError(f"heiti serve in the board exited with {proc.returncode}:\n{_tail(self.log)}",
                                 f"the full log is {self.log}")
            if not _port_free(port):
                client = DeviceClient(TargetHandle(kind="tcp", address=f"127.0.0.1:{port}",
                                                   options={"timeout_s": 30, "retries": 0}))
                try:
                    client.with_retries("connecting", lambda: None)
                    return dict(client.device_info)
                except DeviceError:
                    pass
                finally:
                    client.close()
            if time.monotonic() > deadline:
                raise BoardError(f"heiti serve in the board did not answer within {timeout_s:.0f} s:\n{_tail(self.log)}",
                                 f"the full log is {self.log}")
            time.sleep(1.0)

    def down(self, quiet: bool = False) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after 20 s); its mounts go with its namespace."""
        state = self.state()
        if state is None:
            return False
        pid = int(state.get("pid", 0))
        stopped = False
        if _is_our_server(pid, str(self.rootfs)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 10:
                    time.sleep(0.2)
            stopped = True
        self.state_file.unlink(missing_ok=True)
        if not quiet:
            _say(f"stopped the board (pid {pid})" if stopped else "the board was not running (stale state removed)")
        return stopped

    def status(self, probe: bool = True) -> dict[str, Any]:
        build = self.build_info()
        out: dict[str, Any] = {"arch": self.arch.name, "dir": str(self.dir), "built": build is not None,
                               "build": build, "running": False}
        state = self.running()
        if state is not None:
            out.update(running=True, pid=state["pid"], port=state["port"], address=state["address"],
                       emulator=state.get("emulator"), started=state.get("started"))
            if probe:
                out["device"] = _hello(state["address"])
            else:
                out["device"] = state.get("device")
        return out


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


def _alive(pid: int) -> bool:
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


def _is_our_server(pid: int, rootfs: str) -> bool:
    """The pid is alive and is the board's server (not a recycled pid): it is in the board's chroot."""
    if pid <= 0 or not _alive(pid):
        return False
    try:
        root = os.readlink(f"/proc/{pid}/root")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return root == rootfs or (b"heiti-board" in cmdline and rootfs.encode() in cmdline)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _hello(address: str) -> dict[str, Any] | str:
    from heiti.engine.payloads import TargetHandle
    from heiti.nodes.devices.client import DeviceClient, DeviceError

    client = DeviceClient(TargetHandle(kind="tcp", address=address, options={"timeout_s": 30, "retries": 0}))
    try:
        client.with_retries("connecting", lambda: None)
        return dict(client.device_info)
    except DeviceError as err:
        return f"no answer: {err}"
    finally:
        client.close()


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
