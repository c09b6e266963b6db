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
"""

from __future__ import annotations

import hmac
import os
import platform
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from heiti.nodes.devices.model_store import DEFAULT_PARTIAL_TTL, ModelStore, StoreError, extract_flat
from heiti.nodes.devices.protocol import (
    DEFAULT_MAX_PAYLOAD,
    PRE_HELLO_MAX_PAYLOAD,
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
#: bytes before the first valid frame after which a TCP link is closed (it is no client of ours)
MAX_GARBAGE = 64 * 1024
#: protocol errors in a row (no valid frame between) after which a TCP link is closed
MAX_ERRORS_IN_A_ROW = 64
#: error replies to bad frames: this many per second per link, bursts of ERROR_BURST
ERROR_RATE, ERROR_BURST = 5.0, 10
#: runtimes whose models are native code run inside this process
NATIVE_RUNTIMES = frozenset({"tvm"})
_STORE_CODES = {"bad_request": ErrorCode.BAD_REQUEST, "mismatch": ErrorCode.UPLOAD_MISMATCH,
                "unsafe": ErrorCode.UNSAFE_ARCHIVE, "too_large": ErrorCode.TOO_LARGE, "no_model": ErrorCode.NO_MODEL}


class _Bucket:
    """A token bucket: `take` is True at most `rate` times a second after a burst of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _LogLimit:
    """At most `per_window` lines of one kind per `window` s; then a count of what was left out."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window, self.window = per_window, window
        self._kinds: dict[str, list[float | int]] = {}  # kind -> [window start, lines, suppressed]
        self._lock = threading.Lock()

    def allow(self, kind: str) -> tuple[bool, int]:
        """(print this line?, lines of this kind left out in the window that just ended)."""
        now = time.monotonic()
        with self._lock:
            state = self._kinds.setdefault(kind, [now, 0, 0])
            dropped = 0
            if now - state[0] > self.window:
                dropped = int(state[2])
                state[:] = [now, 0, 0]
            if state[1] < self.per_window:
                state[1] += 1
                return True, dropped
            state[2] += 1
            return False, dropped


_log_limit = _LogLimit()


def _say(message: str, kind: str | None = None) -> None:
    """One line on stderr; lines of a `kind` that a client can provoke at will are rate-limited."""
    if kind is not None:
        allowed, dropped = _log_limit.allow(kind)
        if dropped:
            print(f"heiti serve: ({dropped} more '{kind}' lines left out)", file=sys.stderr, flush=True)
        if not allowed:
            return
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


class _Link:
    """One client link: authentication state, the open session, and the request loop."""

    def __init__(self, server: DeviceServer, transport: Transport, stream: bool) -> None:
        self.server = server
        # a serial line carries boot noise and cannot be closed: no garbage cap, no HTTP check there
        self.channel = Channel(transport, PRE_HELLO_MAX_PAYLOAD, server.frame_timeout,
                               max_garbage=None if stream else MAX_GARBAGE, reject_http=not stream)
        self.stream = stream  # a serial line: never "closes"; a new HELLO starts over
        self.greeted = False
        self.authenticated = False  # greeted with the token the server was started with
        self.session: Any = None
        self.steps: tuple[Any, Any, Any, Any] = (None, None, None, None)
        self.loading = False
        self.monitor = False  # HELLO asked for STATS while idle (heiti monitor)
        self._stats_sent = 0
        self._last_garbage_reply = 0.0
        self._errors = _Bucket(ERROR_RATE, ERROR_BURST)
        self._errors_in_a_row = 0
        self._suppressed = 0
        self._last_request = self.opened = time.monotonic()
        self._set_greeted(False)

    def _set_greeted(self, greeted: bool) -> None:
        """Before HELLO a link has a small frame limit and a total time to say it (TCP)."""
        self.greeted = greeted
        self.monitor = self.monitor and greeted
        self.authenticated = greeted and self.server.token is not None
        self.channel.parser.max_payload = self.server.max_payload if greeted else PRE_HELLO_MAX_PAYLOAD
        if greeted or self.stream:
            self.channel.hard_deadline = None
        else:
            self.channel.hard_deadline = time.monotonic() + self.server.hello_timeout

    @property
    def name(self) -> str:
        return self.channel.transport.name

    def run(self) -> None:
        with self.server._links_lock:
            self.server._links.add(self)
        try:
            self._loop()
        except LinkTimeout as err:
            if self.greeted:
                _say(f"{self.name}: link ended ({err})", kind="link ended")
            else:
                _say(f"{self.name}: no HELLO within {self.server.hello_timeout:g}s, closing", kind="no HELLO")
        except LinkClosed as err:
            _say(f"{self.name}: link ended ({err})", kind="link ended")
        except Exception as err:  # noqa: BLE001 - a link's failure must never reach the server
            _say(f"{self.name}: link failed: {type(err).__name__}: {err}", kind="link failed")
        finally:
            self._close_session()
            self.channel.close()
            with self.server._links_lock:
                self.server._links.discard(self)
            self.server._expire_partials()  # a dropped upload's bytes go once their time is up

    def _loop(self) -> None:
        period = self.server.sampler.period
        while not self.server.stopped.is_set():
            self._send_stats()
            try:
                msg = self.channel.receive(min(period, 0.5))
            except ProtocolError as err:
                if not self._protocol_error(err):
                    return
                continue
            now = time.monotonic()
            if msg is None:
                if not self.stream and now - self._last_request > self.server.idle_timeout:
                    _say(f"{self.name}: idle for {self.server.idle_timeout:g}s, closing", kind="idle")
                    return
                continue
            self._last_request = now
            self._errors_in_a_row = 0
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

    def _protocol_error(self, err: ProtocolError) -> bool:
        """Answer a bad frame, a few times a second at most; False ends the link."""
        if not self.stream:
            self._errors_in_a_row += 1
            if err.fatal or self._errors_in_a_row > MAX_ERRORS_IN_A_ROW:
                why = err.message if err.fatal else f"{self._errors_in_a_row} bad frames in a row"
                _say(f"{self.name}: closing: {why}", kind="not a client")
                return False
        now = time.monotonic()
        if err.code == ErrorCode.GARBAGE:
            if now - self._last_garbage_reply < 0.2:
                return True  # one reply per burst of noise, not one per byte
            self._last_garbage_reply = now
        if not self._errors.take():
            self._suppressed += 1  # silence: the replies must not cost more than the noise
            return True
        message = err.message
        if self._suppressed:
            message += f" ({self._suppressed} more errors not answered)"
            self._suppressed = 0
        self._error(err.seq or 0, err.code, message)
        return True

    def _send_stats(self) -> None:
        sampler = self.server.sampler
        if (self.session is None and not self.loading and not self.monitor) or sampler.count == self._stats_sent or sampler.latest is None:
            return
        self._stats_sent = sampler.count
        try:
            self.channel.send(MsgType.STATS, dict(sampler.latest), timeout=self.server.write_timeout)
        except LinkTimeout:
            if not self.stream:
                raise
            _say(f"{self.name}: nobody reads the line; stopping the session's stats")
            self.monitor = False
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
            self._set_greeted(False)
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
        self._set_greeted(False)
        token = self.server.token
        given = msg.fields.get("token") or ""
        if token is not None and not (isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())):
            self._error(msg.seq, ErrorCode.UNAUTHORIZED, "wrong or missing token")
            _say(f"{self.name}: refused a HELLO with a wrong token", kind="wrong token")
            return self.stream
        version = msg.fields.get("protocol")
        if version != VERSION:
            self._error(msg.seq, ErrorCode.UNSUPPORTED_VERSION, f"client speaks protocol {version}, device {VERSION}")
            return True
        self._set_greeted(True)
        self.monitor = msg.fields.get("monitor") is True
        self._reply(msg, MsgType.HELLO, {**self.server.device_info(), "monitor": self.monitor})
        return True

    def _upload(self, msg: Message) -> None:
        f, store = msg.fields, self.server.store
        sha = f.get("sha256")
        try:
            size, name, packing = f.get("size"), f.get("name"), f.get("packing", "file")
            if msg.data is None:
                complete, offset = store.begin(sha, size, name, packing)
                self._reply(msg, MsgType.OK, {"complete": complete, "offset": offset})
                return
            if name is None:
                raise StoreError("bad_request", "an upload chunk needs the model's name")
            complete, _ = store.begin(sha, size, name, packing)
            if complete:
                self._reply(msg, MsgType.OK, {"complete": True, "offset": size})
                return
            offset = store.append(sha, size, f.get("offset"), msg.data)
            if offset == size:
                self._busy(lambda: store.finish(sha, name, packing, size))
                _say(f"{self.name}: model {sha[:12]}… stored ({size} bytes)", kind="stored")
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
        from heiti.nodes.devices.load_options import validate_options, with_model_meta
        from heiti.nodes.runtimes.backends import BackendUnavailable, available_runtimes, open_session

        self._close_session()
        f = msg.fields
        runtime = f.get("runtime")
        if not isinstance(runtime, str):
            self._error(msg.seq, ErrorCode.BAD_REQUEST, f"runtime must be a name, got {runtime!r}")
            return
        if runtime not in available_runtimes():
            self._error(msg.seq, ErrorCode.RUNTIME_UNAVAILABLE,
                        f"runtime {runtime!r} is not installed on this device (it has: {', '.join(available_runtimes()) or 'none'})")
            return
        if runtime in NATIVE_RUNTIMES and not (self.authenticated or self.server.allow_native):
            self._error(msg.seq, ErrorCode.NATIVE_REFUSED,
                        f"{runtime} models are native code: this device loads them only for a client that "
                        "presented its token (start it with --token) or when started with --allow-native")
            _say(f"{self.name}: refused to load native code for a client without a token", kind="native refused")
            return
        try:
            options = validate_options(runtime, f.get("options"))
        except ValueError as err:
            self._error(msg.seq, ErrorCode.BAD_REQUEST, str(err))
            return
        try:
            path = self.server.store.entry_path(ModelStore.check_sha(f.get("sha256")), f.get("entry"))
        except StoreError as err:
            self._error(msg.seq, _STORE_CODES.get(err.kind, ErrorCode.BAD_REQUEST), str(err))
            return
        try:
            options = with_model_meta(runtime, path, options)
        except ValueError as err:
            self._error(msg.seq, ErrorCode.BAD_REQUEST, str(err))
            return
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
    objects = path.with_name(path.stem + ".objects")
    shutil.rmtree(objects, ignore_errors=True)
    partial = linked.with_suffix(".partial.so")
    try:
        try:
            files = extract_flat(path, objects, max_bytes=path.stat().st_size)
        except StoreError as err:
            raise ValueError(f"the TVM archive is refused: {err}") from None
        from tvm.support import cc

        cc.create_shared(str(partial), sorted(str(f) for f in files))
        os.replace(partial, linked)
    finally:
        shutil.rmtree(objects, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return linked


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


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
