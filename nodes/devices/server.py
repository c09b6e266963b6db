"""`heiti serve`: run on a device, serve its runtimes to a host over TCP or a serial line.

One loop per link reads frames, answers each request, and streams STATS while a model is loaded
(or, for a link whose HELLO asked `"monitor": true`, all the time: `heiti monitor`).
A bad frame (garbage, bad CRC, oversize, truncated) gets an ERROR reply and the parser
resynchronises on the next frame start; a client that vanishes only ends its own link. Inference
is serialised across links so that two hosts never disturb each other's measurements.

Safe by default against clients that misbehave (docs/protocol.md, "Limits"): a total time to
HELLO and a per-frame time that trickled bytes cannot extend, a small frame limit before HELLO,
the oldest link still without HELLO making room when all places are taken, bounded buffers (a
client that never reads meets a full socket, then a write timeout), a few error replies per second
per link, HTTP and endless noise closing the link, LOAD options checked by a schema, and native
code (TVM modules) loaded only for a client that presented the token, or with --allow-native.

This module accepts links and holds what they share; server_link.py is one link's request loop,
server_models.py its UPLOAD_MODEL and LOAD requests, server_limits.py the limits and rate limits.
"""

from __future__ import annotations

import os
import platform
import select
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from heiti.nodes.devices.model_store import DEFAULT_PARTIAL_TTL, ModelStore
from heiti.nodes.devices.protocol import (
    DEFAULT_MAX_PAYLOAD,
    VERSION,
    Channel,
    ErrorCode,
    MsgType,
    error_fields,
)
from heiti.nodes.devices.server_limits import (  # noqa: F401 - names this module has always offered
    ERROR_BURST,
    ERROR_RATE,
    MAX_ERRORS_IN_A_ROW,
    MAX_GARBAGE,
    MAX_LINKS,
    NATIVE_RUNTIMES,
)
from heiti.nodes.devices.server_limits import say as _say
from heiti.nodes.devices.server_link import Link as _Link
from heiti.nodes.devices.server_models import _link_tvm_archive  # noqa: F401 - tests link archives through it
from heiti.nodes.devices.stats import StatsSampler
from heiti.nodes.devices.transport import (
    LinkClosed,
    LinkTimeout,
    SerialTransport,
    TcpTransport,
    Transport,
    is_loopback,
    listen_tcp,
    parse_address,
)


class DeviceServer:
    def __init__(
        self,
        workdir: Path,
        token: str | None = None,
        stats_period: float = 0.5,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        frame_timeout: float = 5.0,
        write_timeout: float = 10.0,
        idle_timeout: float = 600.0,
        hello_timeout: float = 10.0,
        max_links: int = MAX_LINKS,
        allow_native: bool = False,
        partial_ttl: float = DEFAULT_PARTIAL_TTL,
    ) -> None:
        self.store = ModelStore(Path(workdir), partial_ttl=partial_ttl)
        self.token = token or None
        #: load native modules (TVM .so) for clients that presented no token
        self.allow_native = allow_native
        self.max_payload = max_payload
        self.frame_timeout = frame_timeout
        self.write_timeout = write_timeout
        self.idle_timeout = idle_timeout
        self.hello_timeout = hello_timeout
        self.max_links = max_links
        self.sampler = StatsSampler(stats_period)
        self.infer_lock = threading.Lock()
        self.stopped = threading.Event()
        #: set once the server listens (TCP) or has its serial port open
        self.ready = threading.Event()
        self.address: tuple[str, int] | None = None
        self._links: set[_Link] = set()
        self._links_lock = threading.Lock()

    def device_info(self) -> dict[str, Any]:
        from heiti.nodes.runtimes.backends import available_runtimes

        vm = psutil.virtual_memory()
        return {
            "protocol": VERSION, "server": "heiti serve", "hostname": platform.node(),
            "system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "mem_total_mb": round(vm.total / 2**20), "runtimes": available_runtimes(),
            "max_payload": self.max_payload, "stats_period": self.sampler.period, "time": time.monotonic(),
            # set by `heiti board` (nodes/devices/board.py): this "device" is an emulator on the host
            **({"emulated": True, "emulator": os.environ["HEITI_EMULATOR"]} if os.environ.get("HEITI_EMULATOR") else {}),
        }

    # --- serving ----------------------------------------------------------------------------------
    def serve_tcp(self, host: str, port: int) -> None:
        """Accept clients until `stop()`; each link runs in its own thread."""
        listener = listen_tcp(host, port)
        self.address = listener.getsockname()[:2]
        self.ready.set()
        _say(f"listening on tcp {self.address[0]}:{self.address[1]}")
        try:
            swept = time.monotonic()
            while not self.stopped.is_set():
                ready, _, _ = select.select([listener], [], [], 0.2)
                if time.monotonic() - swept > min(60.0, self.store.partial_ttl / 2):
                    swept = time.monotonic()
                    self._expire_partials()
                if not ready:
                    continue
                try:
                    sock, peer = listener.accept()
                except OSError:
                    continue
                transport = TcpTransport(sock, f"tcp {peer[0]}:{peer[1]}")
                link = _Link(self, transport, stream=False)
                with self._links_lock:
                    if len(self._links) >= self.max_links:
                        self._evict_a_stranger()
                    busy = len(self._links) >= self.max_links
                    if not busy:
                        self._links.add(link)
                if busy:
                    self._refuse(transport)
                    continue
                threading.Thread(target=link.run, name=f"link {peer}", daemon=True).start()
        finally:
            listener.close()

    def _expire_partials(self) -> None:
        try:
            gone = self.store.expire_partials()
        except OSError as err:
            _say(f"cleaning up unfinished uploads failed: {err}", kind="cleanup")
            return
        if gone:
            _say(f"removed {len(gone)} unfinished upload(s) untouched for {self.store.partial_ttl:g}s", kind="expired")

    def _evict_a_stranger(self) -> None:
        """All places are taken: the oldest link still without a HELLO makes room (a real client
        says HELLO within milliseconds, so it is a stranger keeping a place). Holds _links_lock."""
        strangers = [link for link in self._links if not link.greeted]
        if strangers:
            oldest = min(strangers, key=lambda link: link.opened)
            self._links.discard(oldest)
            _say(f"{oldest.name}: no HELLO yet and all {self.max_links} places taken; closing it", kind="evicted")
            oldest.channel.transport.abort()

    def _refuse(self, transport: Transport) -> None:
        try:
            busy = error_fields(ErrorCode.BUSY, f"{self.max_links} clients already connected")
            Channel(transport).send(MsgType.ERROR, busy, timeout=1)
        except (LinkClosed, LinkTimeout):
            pass
        transport.close()

    def serve_serial(self, port: str, baud: int) -> None:
        """Serve one serial line until `stop()`, reopening it when it disappears (USB unplugged)."""
        while not self.stopped.is_set():
            try:
                transport = SerialTransport(port, baud)
            except LinkClosed as err:
                _say(f"{err}; retrying in 1 s")
                self.stopped.wait(1.0)
                continue
            _say(f"serving on {transport.name}")
            self.ready.set()
            _Link(self, transport, stream=True).run()

    def stop(self) -> None:
        self.stopped.set()
        self.sampler.stop()
        with self._links_lock:
            links = list(self._links)
        for link in links:
            link.channel.transport.abort()



def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, `kill`) ends the server like Ctrl-C, so its cleanup runs."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(args: Any) -> int:
    """Entry point of `heiti serve` (arguments defined in engine/cli.py)."""
    token = args.token or os.environ.get("HEITI_TOKEN") or None
    if args.tcp:
        try:
            host, port = parse_address(args.tcp)
        except ValueError as err:
            _say(str(err))
            return 2
        if not is_loopback(host) and not token:
            _say(f"refusing to listen on {host}, which is not loopback, without --token "
                 "(clients then present it in HELLO; keep it secret)")
            return 2
    own_workdir = not args.workdir
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="heiti-serve-"))
    limits = {name: getattr(args, name) for name in ("hello_timeout", "frame_timeout") if getattr(args, name, None)}
    allow_native = bool(getattr(args, "allow_native", False))
    try:
        _stop_on_sigterm()
        server = DeviceServer(workdir, token=token, stats_period=args.stats_period, allow_native=allow_native, **limits)
        _say(f"models are kept in {workdir}; runtimes here: {', '.join(server.device_info()['runtimes']) or 'none'}")
        if allow_native and not token:
            _say("--allow-native: any client that can reach this port may run native code here")
        try:
            if args.tcp:
                server.serve_tcp(host, port)
            else:
                server.serve_serial(args.serial, args.baud)
        except KeyboardInterrupt:
            _say("stopped")
        except OSError as err:
            _say(f"cannot serve: {err}")
            return 2
        finally:
            server.stop()
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)  # the temporary folder and every model in it
    return 0
