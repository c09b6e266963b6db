"""One client link of `heiti serve`: authentication state, the open session, the request loop.

Bad frames get rate-limited ERROR replies and the parser resynchronises; HELLO, PING, BYE and
INFER are answered here, the model requests in server_models.py. A link's failure ends only it.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Any

from heiti.nodes.devices.protocol import (
    PRE_HELLO_MAX_PAYLOAD,
    VERSION,
    Channel,
    ErrorCode,
    Message,
    MsgType,
    ProtocolError,
    error_fields,
)
from heiti.nodes.devices.server_limits import (
    ERROR_BURST,
    ERROR_RATE,
    MAX_ERRORS_IN_A_ROW,
    MAX_GARBAGE,
    TokenBucket,
)
from heiti.nodes.devices.server_limits import say as _say
from heiti.nodes.devices.server_models import ModelRequests
from heiti.nodes.devices.transport import LinkClosed, LinkTimeout, Transport


class Link(ModelRequests):
    """One client link: authentication state, the open session, and the request loop."""

    def __init__(self, server: Any, transport: Transport, stream: bool) -> None:
        # `server` is the server.DeviceServer that accepted the link (not imported: server imports this)
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
        self._errors = TokenBucket(ERROR_RATE, ERROR_BURST)
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

