"""A running board: `heiti serve` started in the board's chroot inside its own mount namespace,
waited for until it says HELLO, probed, and stopped (its mounts vanish with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from heiti.nodes.devices.board_host import BoardError, check_host, emulator_version
from heiti.nodes.devices.board_host import alive as _alive
from heiti.nodes.devices.board_host import is_our_server as _is_our_server
from heiti.nodes.devices.board_host import port_free as _port_free
from heiti.nodes.devices.board_host import say as _say
from heiti.nodes.devices.board_host import tail as _tail
from heiti.nodes.devices.board_image import NOBODY, BoardImage

if TYPE_CHECKING:
    from heiti.engine.payloads import TargetHandle

DEFAULT_PORT = 7080
HELLO_TIMEOUT_S = 300.0

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


class Board(BoardImage):
    """An emulated board: its image (BoardImage) plus starting, probing and stopping its server."""

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
        from heiti.nodes.devices.client import DeviceError, device_hello

        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise BoardError(f"heiti serve in the board exited with {proc.returncode}:\n{_tail(self.log)}",
                                 f"the full log is {self.log}")
            if not _port_free(port):
                with contextlib.suppress(DeviceError):
                    return device_hello(_board_target(f"127.0.0.1:{port}"))
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


def _board_target(address: str) -> TargetHandle:
    """The board's server as a target: 30 s of patience (Python is emulated there), no retries."""
    from heiti.engine.payloads import TargetHandle

    return TargetHandle(kind="tcp", address=address, options={"timeout_s": 30, "retries": 0})


def _hello(address: str) -> dict[str, Any] | str:
    from heiti.nodes.devices.client import DeviceError, device_hello

    try:
        return device_hello(_board_target(address))
    except DeviceError as err:
        return f"no answer: {err}"

