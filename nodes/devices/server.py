"""`heiti serve`: run on a device, serve its runtimes to a host over TCP or a serial line.

One loop per link reads frames, answers each request, and streams STATS while a model is loaded.
A bad frame (garbage, bad CRC, oversize, truncated) gets an ERROR reply and the parser
resynchronises on the next frame start; a client that vanishes only ends its own link. Inference
is serialised across links so that two hosts never disturb each other's measurements.
"""

from __future__ import annotations

import hmac
import os
import platform
import select
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from heiti.nodes.devices.model_store import ModelStore, StoreError
from heiti.nodes.devices.protocol import (
    DEFAULT_MAX_PAYLOAD,
    VERSION,
    Channel,
    ErrorCode,
    Message,
    MsgType,
    ProtocolError,
    error_fields,
)
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

MAX_LINKS = 8
_STORE_CODES = {"bad_request": ErrorCode.BAD_REQUEST, "mismatch": ErrorCode.UPLOAD_MISMATCH,
                "unsafe": ErrorCode.UNSAFE_ARCHIVE, "too_large": ErrorCode.TOO_LARGE, "no_model": ErrorCode.NO_MODEL}


def _say(message: str) -> None:
    print(f"heiti serve: {message}", file=sys.stderr, flush=True)


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
        hello_timeout: float = 30.0,
        max_links: int = MAX_LINKS,
    ) -> None:
        self.store = ModelStore(Path(workdir))
        self.token = token or None
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
        }

    # --- serving ----------------------------------------------------------------------------------
    def serve_tcp(self, host: str, port: int) -> None:
        """Accept clients until `stop()`; each link runs in its own thread."""
        listener = listen_tcp(host, port)
        self.address = listener.getsockname()[:2]
        self.ready.set()
        _say(f"listening on tcp {self.address[0]}:{self.address[1]}")
        try:
            while not self.stopped.is_set():
                ready, _, _ = select.select([listener], [], [], 0.2)
                if not ready:
                    continue
                try:
                    sock, peer = listener.accept()
                except OSError:
                    continue
                transport = TcpTransport(sock, f"tcp {peer[0]}:{peer[1]}")
                link = _Link(self, transport, stream=False)
                with self._links_lock:
                    busy = len(self._links) >= self.max_links
                    if not busy:
                        self._links.add(link)
                if busy:
                    self._refuse(transport)
                    continue
                threading.Thread(target=link.run, name=f"link {peer}", daemon=True).start()
        finally:
            listener.close()

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
            link.channel.close()


class _Link:
    """One client link: authentication state, the open session, and the request loop."""

    def __init__(self, server: DeviceServer, transport: Transport, stream: bool) -> None:
        self.server = server
        self.channel = Channel(transport, server.max_payload, server.frame_timeout)
        self.stream = stream  # a serial line: never "closes"; a new HELLO starts over
        self.greeted = False
        self.session: Any = None
        self.steps: tuple[Any, Any, Any, Any] = (None, None, None, None)
        self.loading = False
        self._stats_sent = 0
        self._last_garbage_reply = 0.0
        self._last_request = self._opened = time.monotonic()

    @property
    def name(self) -> str:
        return self.channel.transport.name

    def run(self) -> None:
        with self.server._links_lock:
            self.server._links.add(self)
        try:
            self._loop()
        except (LinkClosed, LinkTimeout) as err:
            _say(f"{self.name}: link ended ({err})")
        except Exception as err:  # noqa: BLE001 - a link's failure must never reach the server
            _say(f"{self.name}: link failed: {type(err).__name__}: {err}")
        finally:
            self._close_session()
            self.channel.close()
            with self.server._links_lock:
                self.server._links.discard(self)

    def _loop(self) -> None:
        period = self.server.sampler.period
        while not self.server.stopped.is_set():
            self._send_stats()
            try:
                msg = self.channel.receive(min(period, 0.5))
            except ProtocolError as err:
                self._protocol_error(err)
                continue
            now = time.monotonic()
            if msg is None:
                if not self.stream and now - self._last_request > self.server.idle_timeout:
                    _say(f"{self.name}: idle for {self.server.idle_timeout:g}s, closing")
                    return
                if not self.stream and not self.greeted and now - self._opened > self.server.hello_timeout:
                    _say(f"{self.name}: no HELLO within {self.server.hello_timeout:g}s, closing")
                    return  # a silent connection must not hold one of the max_links places
                continue
            self._last_request = now
            if msg.is_reply:
                continue  # a client never sends replies; ignore stray ones
            try:
                if not self._dispatch(msg):
                    return
            except (LinkClosed, LinkTimeout):
                raise
            except Exception as err:  # noqa: BLE001 - a request the checks missed: answer, keep serving
                self._error(msg.seq, ErrorCode.INTERNAL, f"{type(err).__name__}: {err}")

    # --- replies ------------------------------------------------------------------------------------
    def _reply(self, msg: Message, msg_type: MsgType, fields: dict[str, Any] | None = None, arrays: Any = ()) -> None:
        self.channel.send(msg_type, fields, arrays, seq=msg.seq, reply=True, timeout=self.server.write_timeout)

    def _error(self, seq: int, code: ErrorCode, message: str) -> None:
        self.channel.send(MsgType.ERROR, error_fields(code, message), seq=seq, reply=True, timeout=self.server.write_timeout)

    def _protocol_error(self, err: ProtocolError) -> None:
        now = time.monotonic()
        if err.code == ErrorCode.GARBAGE:
            if now - self._last_garbage_reply < 0.2:
                return  # one reply per burst of noise, not one per byte
            self._last_garbage_reply = now
        self._error(err.seq or 0, err.code, err.message)

    def _send_stats(self) -> None:
        sampler = self.server.sampler
        if (self.session is None and not self.loading) or sampler.count == self._stats_sent or sampler.latest is None:
            return
        self._stats_sent = sampler.count
        try:
            self.channel.send(MsgType.STATS, dict(sampler.latest), timeout=self.server.write_timeout)
        except LinkTimeout:
            if not self.stream:
                raise
            _say(f"{self.name}: nobody reads the line; stopping the session's stats")
            self._close_session()

    # --- requests -----------------------------------------------------------------------------------
    def _dispatch(self, msg: Message) -> bool:
        """Answer one request; False ends the link."""
        kind = msg.type
        if kind == MsgType.HELLO:
            return self._hello(msg)
        if not self.greeted:
            self._error(msg.seq, ErrorCode.HELLO_FIRST, "send HELLO (with the token, if the device has one) first")
            return True
        if kind == MsgType.PING:
            self._reply(msg, MsgType.PING, {"time": time.monotonic()})
        elif kind == MsgType.BYE:
            self._close_session()
            self._reply(msg, MsgType.BYE)
            if not self.stream:
                return False
            self.greeted = False
        elif kind == MsgType.UPLOAD_MODEL:
            self._upload(msg)
        elif kind == MsgType.LOAD:
            self._load(msg)
        elif kind == MsgType.INFER:
            self._infer(msg)
        else:
            self._error(msg.seq, ErrorCode.UNKNOWN_TYPE, f"message type {kind} is not a request this device knows")
        return True

    def _hello(self, msg: Message) -> bool:
        self._close_session()
        self.greeted = False
        token = self.server.token
        given = msg.fields.get("token") or ""
        if token is not None and not (isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())):
            self._error(msg.seq, ErrorCode.UNAUTHORIZED, "wrong or missing token")
            _say(f"{self.name}: refused a HELLO with a wrong token")
            return self.stream
        version = msg.fields.get("protocol")
        if version != VERSION:
            self._error(msg.seq, ErrorCode.UNSUPPORTED_VERSION, f"client speaks protocol {version}, device {VERSION}")
            return True
        self.greeted = True
        self._reply(msg, MsgType.HELLO, self.server.device_info())
        return True

    def _upload(self, msg: Message) -> None:
        f, store = msg.fields, self.server.store
        try:
            sha, size = f.get("sha256"), f.get("size")
            if msg.data is None:
                complete, offset = store.begin(sha, size)
                self._reply(msg, MsgType.OK, {"complete": complete, "offset": offset})
                return
            complete, _ = store.begin(sha, size)
            if complete:
                self._reply(msg, MsgType.OK, {"complete": True, "offset": size})
                return
            offset = store.append(sha, size, f.get("offset"), msg.data)
            if offset == size:
                self._busy(lambda: store.finish(sha, f.get("name"), f.get("packing", "file")))
                _say(f"{self.name}: model {sha[:12]}… stored ({size} bytes)")
                self._reply(msg, MsgType.OK, {"complete": True, "offset": offset})
            else:
                self._reply(msg, MsgType.OK, {"complete": False, "offset": offset})
        except StoreError as err:
            fields = error_fields(_STORE_CODES.get(err.kind, ErrorCode.BAD_REQUEST), str(err))
            if isinstance(sha, str) and len(sha) == 64:
                try:
                    fields["offset"] = store.offset(sha)
                except StoreError:
                    pass
            self.channel.send(MsgType.ERROR, fields, seq=msg.seq, reply=True, timeout=self.server.write_timeout)

    def _load(self, msg: Message) -> None:
        from heiti.nodes.runtimes.backends import BackendUnavailable, available_runtimes, open_session

        self._close_session()
        f = msg.fields
        runtime = f.get("runtime")
        try:
            path = self.server.store.entry_path(ModelStore.check_sha(f.get("sha256")), f.get("entry"))
        except StoreError as err:
            self._error(msg.seq, _STORE_CODES.get(err.kind, ErrorCode.BAD_REQUEST), str(err))
            return
        if runtime not in available_runtimes():
            self._error(msg.seq, ErrorCode.RUNTIME_UNAVAILABLE,
                        f"runtime {runtime!r} is not installed on this device (it has: {', '.join(available_runtimes()) or 'none'})")
            return
        options = f.get("options") or {}
        started = time.perf_counter()
        try:
            session = self._busy(lambda: open_session(runtime, str(_link_tvm_archive(path) if runtime == "tvm" else path), options))
        except Exception as err:  # noqa: BLE001 - reported to the client
            code = ErrorCode.RUNTIME_UNAVAILABLE if isinstance(err, BackendUnavailable) else ErrorCode.LOAD_FAILED
            self._error(msg.seq, code, f"{runtime} could not load {path.name}: {type(err).__name__}: {err}")
            return
        self.session = session
        self.steps = _session_steps(self.session)
        load_ms = (time.perf_counter() - started) * 1e3
        _say(f"{self.name}: loaded {path.name} on {runtime} in {load_ms:.0f} ms")
        self._reply(msg, MsgType.OK, {"inputs": _jsonable(self.session.inputs), "outputs": _jsonable(self.session.outputs),
                                      "load_ms": load_ms, "time": time.monotonic()})
        # every session gets at least one device sample, however short its measurement is
        self.server.sampler.ready.wait(2 * self.server.sampler.period)
        self._stats_sent = -1
        self._send_stats()

    def _busy(self, work: Any) -> Any:
        """Run slow work (a model load, hashing a big upload) in a thread while STATS keep flowing,
        so that the client's silence timeout does not fire; returns its result or raises its error."""
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = work()
            except BaseException as err:  # noqa: BLE001 - handed back to the caller
                result["error"] = err

        worker = threading.Thread(target=target, name="busy", daemon=True)
        self.loading = True
        try:
            worker.start()
            while worker.is_alive():
                worker.join(self.server.sampler.period)
                self._send_stats()
        finally:
            self.loading = False
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def _infer(self, msg: Message) -> None:
        if self.session is None:
            self._error(msg.seq, ErrorCode.NO_SESSION, "no model loaded on this link; send LOAD first")
            return
        prepare, stage, run, finish = self.steps
        clock = time.perf_counter_ns
        try:
            with self.server.infer_lock:
                start = clock()
                feed = prepare(msg.arrays)
                if stage is not None:
                    stage(feed)
                t0 = clock()
                raw = run(feed)  # the call a local measurement times, timed the same way here
                device_ns = clock() - t0
                outputs = finish(raw) if finish is not None else raw
                total_ns = clock() - start
        except Exception as err:  # noqa: BLE001 - reported to the client
            self._error(msg.seq, ErrorCode.INFER_FAILED, f"{type(err).__name__}: {err}")
            return
        self._reply(msg, MsgType.OUTPUT, {"device_ms": device_ns / 1e6, "device_total_ms": total_ns / 1e6}, outputs)

    def _close_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception as err:  # noqa: BLE001
                _say(f"{self.name}: closing the session failed: {err}")


def _session_steps(session: Any) -> tuple[Any, Any, Any, Any]:
    """(prepare, stage, run, finish) as the host's measurement loop splits them; run-only otherwise."""
    try:
        from heiti.nodes.runtimes.backends import session_steps
    except ImportError:
        return (lambda inputs: inputs), None, session.run, None
    return session_steps(session)


def _link_tvm_archive(path: Path) -> Path:
    """A TVM module cross-compiled as a .tar of object files is linked here, on the device it was
    built for, with this device's C compiler (once: the .so is kept beside the archive)."""
    if path.suffix != ".tar":
        return path
    linked = path.with_name(path.stem + ".linked.so")
    if linked.exists():
        return linked
    import tarfile

    from tvm.support import cc

    objects = path.with_name(path.stem + ".objects")
    shutil.rmtree(objects, ignore_errors=True)
    objects.mkdir()
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if not member.isfile() or name != member.name or name.startswith("."):
                raise ValueError(f"unexpected entry {member.name!r} in the TVM archive")
            source = tar.extractfile(member)
            assert source is not None
            with source, open(objects / name, "xb") as out:
                shutil.copyfileobj(source, out)
    partial = linked.with_suffix(".partial.so")
    cc.create_shared(str(partial), sorted(str(f) for f in objects.iterdir()))
    os.replace(partial, linked)
    shutil.rmtree(objects, ignore_errors=True)
    return linked


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def main(args: Any) -> int:
    """Entry point of `heiti serve` (arguments defined in engine/cli.py)."""
    token = args.token or os.environ.get("HEITI_TOKEN") or None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="heiti-serve-"))
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
    server = DeviceServer(workdir, token=token, stats_period=args.stats_period)
    _say(f"models are kept in {workdir}; runtimes here: {', '.join(server.device_info()['runtimes']) or 'none'}")
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
    return 0

