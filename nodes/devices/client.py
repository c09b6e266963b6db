"""Host side of the device protocol: connect, HELLO, upload, LOAD, INFER — with timeouts and retries.

Every request waits at most `timeout_s` for the device to say anything (STATS count: a device busy
loading a model keeps streaming them). Link failures are retried a bounded number of times by
reconnecting and restoring the state (HELLO, resume the upload, LOAD); when retries run out, the
error says what had been done ("uploaded 3.2 of 5.1 MB, then the link dropped").
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from heiti.engine.node import NodeError
from heiti.engine.payloads import TargetHandle
from heiti.nodes.devices.protocol import (
    DEFAULT_MAX_PAYLOAD,
    VERSION,
    Channel,
    ErrorCode,
    Message,
    MsgType,
    ProtocolError,
)
from heiti.nodes.devices.transport import LinkClosed, LinkTimeout, SerialTransport, Transport, connect_tcp

T = TypeVar("T")
#: a request may last this many timeouts while the device shows it is alive (a slow model load)
_MAX_REQUEST_TIMEOUTS = 60
#: upload chunks acknowledged without the device's offset moving before the upload is given up
_MAX_STUCK_CHUNKS = 5
_HINTS = {
    ErrorCode.UNAUTHORIZED: "give the target the token the device was started with (--token), or set HEITI_TOKEN",
    ErrorCode.RUNTIME_UNAVAILABLE: "install that runtime's package on the device",
    ErrorCode.NATIVE_REFUSED: "start the device with --token and give the target that token, "
                              "or start it with --allow-native",
}


class DeviceError(NodeError):
    """A device refused a request, or could not be reached within the retries."""

    def __init__(self, message: str, code: ErrorCode | None = None, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message, _HINTS.get(code, "") if code is not None else "")
        self.code = code
        self.fields = fields or {}


class _Transient(Exception):
    """Worth another attempt; `reconnect` when the link itself is suspect."""

    def __init__(self, reason: str, reconnect: bool) -> None:
        super().__init__(reason)
        self.reconnect = reconnect


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


class DeviceClient:
    """One link to a device running `heiti serve`, described by a TargetHandle (tcp or serial)."""

    def __init__(self, target: TargetHandle, on_stats: Callable[[dict[str, Any]], None] | None = None) -> None:
        if target.kind not in ("tcp", "serial"):
            raise DeviceError(f"target kind {target.kind!r} is not a remote device (tcp or serial)")
        opts = target.options
        self.target = target
        self.timeout = float(opts.get("timeout_s", 10.0))
        self.retries = int(opts.get("retries", 2))
        self.token = opts.get("token") or os.environ.get("HEITI_TOKEN", "")
        self.on_stats = on_stats
        self.channel: Channel | None = None
        self.device_info: dict[str, Any] = {}
        #: what has been achieved so far, for error messages
        self.done = "nothing done yet"
        # a random start, so that a stale reply left on a serial line by an earlier client never
        # matches one of our requests
        self._seq = random.randrange(1, 2**31)
        self._clock_offset = 0.0  # host perf_counter - device monotonic

    @property
    def name(self) -> str:
        if self.target.kind == "serial":
            return f"serial {self.target.address} @ {int(self.target.options.get('baud', 115200))} baud"
        return f"tcp {self.target.address}"

    @property
    def max_payload(self) -> int:
        return int(self.device_info.get("max_payload", DEFAULT_MAX_PAYLOAD))

    @property
    def chunk_size(self) -> int:
        base = 32 * 1024 if self.target.kind == "serial" else 1024 * 1024
        return max(1024, min(base, self.max_payload - 4096))

    # --- link ---------------------------------------------------------------------------------------
    def _open(self) -> Transport:
        if self.target.kind == "serial":
            return SerialTransport(self.target.address, int(self.target.options.get("baud", 115200)))
        return connect_tcp(self.target.address, self.timeout)

    def connect(self) -> dict[str, Any]:
        """Open the link and say HELLO; returns the device's description."""
        self.drop()
        self.channel = Channel(self._open(), DEFAULT_MAX_PAYLOAD, frame_timeout=min(self.timeout, 5.0))
        sent = time.perf_counter()
        reply = self.request(MsgType.HELLO, {"protocol": VERSION, "client": "heiti", "token": self.token},
                             expect=MsgType.HELLO)
        self._sync_clock(sent, reply.fields.get("time"))
        self.device_info = reply.fields
        return self.device_info

    def hello(self) -> dict[str, Any]:
        """Connect, with the target's retries, unless connected: a copy of the device's HELLO fields."""
        self.with_retries("connecting", lambda: None)
        return dict(self.device_info)

    def drop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def close(self) -> None:
        """Say BYE (briefly, best effort) and close the link."""
        if self.channel is not None:
            try:
                self.channel.send(MsgType.BYE, seq=self._next_seq(), timeout=1.0)
                self.channel.receive(0.2)
            except (LinkClosed, LinkTimeout, ProtocolError, OSError):
                pass
        self.drop()

    def _sync_clock(self, sent: float, device_time: Any) -> None:
        if isinstance(device_time, int | float):
            self._clock_offset = (sent + time.perf_counter()) / 2 - float(device_time)

    # --- requests -----------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFE + 1
        return self._seq

    def request(
        self,
        msg_type: MsgType,
        fields: dict[str, Any] | None = None,
        arrays: Any = (),
        data: Any = None,
        expect: MsgType = MsgType.OK,
    ) -> Message:
        """Send one request and wait for its reply (STATS on the way go to `on_stats`)."""
        channel = self.channel
        if channel is None:
            raise _Transient("not connected", reconnect=True)
        seq = self._next_seq()
        give_up = time.monotonic() + self.timeout * _MAX_REQUEST_TIMEOUTS
        try:
            channel.send(msg_type, fields, arrays, data, seq=seq, timeout=self.timeout)
            while True:
                if time.monotonic() > give_up:  # the device streams STATS but never answers
                    raise _Transient(f"no answer to {msg_type.name} within {self.timeout * _MAX_REQUEST_TIMEOUTS:g}s "
                                     "although the device is alive", reconnect=True)
                try:
                    msg = channel.receive(self.timeout)
                except ProtocolError as err:
                    if err.seq == seq:  # our reply arrived damaged: ask again
                        raise _Transient(f"the reply was damaged ({err.message})", reconnect=False) from err
                    continue
                if msg is None:
                    raise _Transient(f"no answer to {msg_type.name} within {self.timeout:g}s", reconnect=True)
                if msg.type == MsgType.STATS:
                    self._stats(msg.fields)
                elif msg.type == MsgType.ERROR and (msg.seq == seq or msg.fields.get("code") == ErrorCode.BUSY):
                    self._raise_error(msg)
                elif msg.seq == seq and msg.is_reply:
                    if msg.type != expect:
                        raise DeviceError(f"{self.name}: expected {expect.name}, device sent message type {msg.type:#x}")
                    return msg
        except (LinkClosed, LinkTimeout, OSError) as err:
            raise _Transient(str(err), reconnect=True) from err

    def _raise_error(self, msg: Message) -> None:
        try:
            code = ErrorCode(int(msg.fields.get("code", ErrorCode.INTERNAL)))
        except ValueError:
            code = ErrorCode.INTERNAL
        text = str(msg.fields.get("message", ""))
        if code in (ErrorCode.BAD_CRC, ErrorCode.BAD_HEADER, ErrorCode.TRUNCATED, ErrorCode.GARBAGE):
            raise _Transient(f"the device received a damaged frame ({code.name}: {text})", reconnect=False)
        raise DeviceError(f"{self.name}: {text}", code, msg.fields)

    def _stats(self, fields: dict[str, Any]) -> None:
        if self.on_stats is None:
            return
        sample = dict(fields)
        device_t = sample.get("t")
        if isinstance(device_t, int | float):
            sample["device_t"] = device_t
            sample["t"] = device_t + self._clock_offset
        try:
            self.on_stats(sample)
        except Exception:  # noqa: BLE001 - a broken chart must not break the link
            pass

    def with_retries(self, what: str, action: Callable[[], T], restore: Callable[[], None] | None = None) -> T:
        """Run `action`; on link trouble reconnect (then `restore` state) and try again, boundedly."""
        attempts = self.retries + 1
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                if self.channel is None:
                    self.connect()
                    if restore is not None:
                        restore()
                return action()
            except (_Transient, LinkClosed, LinkTimeout, OSError) as err:
                last = err
                if not isinstance(err, _Transient) or err.reconnect:
                    self.drop()
                if attempt + 1 < attempts:
                    time.sleep(min(0.1 * 2**attempt, 2.0))
        self.drop()
        raise DeviceError(f"{self.name}: {self.done}, then {what} failed: {last} "
                          f"(gave up after {attempts} attempt{'s' if attempts > 1 else ''})")

    # --- model -------------------------------------------------------------------------------------
    def upload(self, bundle: Any) -> bool:
        """Send the bundle unless the device already has its SHA-256; resumes a partial upload."""
        head = {"sha256": bundle.sha256, "size": bundle.size, "name": bundle.name, "packing": bundle.packing}
        reply = self.request(MsgType.UPLOAD_MODEL, head)
        if reply.fields.get("complete"):
            self.done = f"the device already had the model ({_mb(bundle.size)} MB, upload skipped)"
            return False
        offset = self._offset(reply.fields, bundle.size)
        mismatches = stuck = 0
        with open(bundle.path, "rb") as f:
            while offset < bundle.size:
                f.seek(offset)
                data = f.read(min(self.chunk_size, bundle.size - offset))
                try:
                    reply = self.request(MsgType.UPLOAD_MODEL, {**head, "offset": offset}, data=data)
                except DeviceError as err:
                    # the device holds a different amount than we thought (a lost ack): go on from there
                    if err.code == ErrorCode.BAD_REQUEST and "offset" in err.fields and mismatches < 3:
                        mismatches += 1
                        offset = self._offset(err.fields, bundle.size)
                        continue
                    raise
                if reply.fields.get("complete") is True:
                    break
                new = self._offset(reply.fields, bundle.size)
                stuck = stuck + 1 if new <= offset else 0
                if stuck >= _MAX_STUCK_CHUNKS:
                    raise DeviceError(f"{self.name}: the device does not take the upload: {stuck} chunks in a row "
                                      f"acknowledged without progress (offset {new} of {bundle.size})")
                offset = new
                self.done = f"uploaded {_mb(offset)} of {_mb(bundle.size)} MB"
        self.done = f"uploaded the model ({_mb(bundle.size)} MB)"
        return True

    def _offset(self, fields: dict[str, Any], size: int) -> int:
        """The device's upload offset, checked: a whole number of bytes within the model."""
        offset = fields.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size:
            raise DeviceError(f"{self.name}: the device reported upload offset {offset!r} for a {size}-byte model")
        return offset

    def load(self, bundle: Any, runtime: str, options: dict[str, Any]) -> Message:
        sent = time.perf_counter()
        reply = self.request(MsgType.LOAD, {"sha256": bundle.sha256, "entry": bundle.entry, "runtime": runtime,
                                            "options": options})
        self._sync_clock(sent, reply.fields.get("time"))
        self.done = f"loaded the model on {runtime}"
        return reply


class RemoteSession:
    """A runtime session on a device; follows the Session contract of heiti.nodes.runtimes.backends."""

    def __init__(self, client: DeviceClient, bundle: Any, runtime: str, options: dict[str, Any]) -> None:
        self._client = client
        self._bundle = bundle
        self.runtime = runtime
        self.options = dict(options)
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.device_info: dict[str, Any] = {}
        #: device-side time of the last `run` (the runtime call only), in ms
        self.last_device_ms = float("nan")
        #: the same, plus the device's input preparation and output fetching around the call
        self.last_device_total_ms = float("nan")
        self.runs = 0
        self.uploaded = False
        self._closed = False

    def start(self) -> RemoteSession:
        self._client.with_retries("connecting", lambda: None)
        self._check_runtime()
        #: False when the device already had the model (same SHA-256) and the upload was skipped
        self.uploaded = self._client.with_retries("the upload", lambda: self._client.upload(self._bundle))
        reply = self._client.with_retries("loading the model", self._load, restore=self._restore_upload)
        self.inputs = reply.fields.get("inputs", [])
        self.outputs = reply.fields.get("outputs", [])
        self.device_info = dict(self._client.device_info)
        return self

    def _check_runtime(self) -> None:
        have = self._client.device_info.get("runtimes", [])
        if self.runtime not in have:
            raise DeviceError(f"{self._client.name}: runtime {self.runtime!r} is not installed on the device "
                              f"(it has: {', '.join(have) or 'none'})", ErrorCode.RUNTIME_UNAVAILABLE)

    def _load(self) -> Message:
        return self._client.load(self._bundle, self.runtime, self.options)

    def _restore_upload(self) -> None:
        self._client.upload(self._bundle)

    def _restore(self) -> None:
        self._client.upload(self._bundle)
        self._client.load(self._bundle, self.runtime, self.options)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self._closed:
            raise DeviceError(f"{self._client.name}: the remote session is closed")
        arrays = [np.asarray(a) for a in inputs]
        size = sum(a.nbytes for a in arrays)
        if size > self._client.max_payload - 65536:
            raise DeviceError(f"{self._client.name}: inputs of {_mb(size)} MB exceed the device's frame limit "
                              f"of {_mb(self._client.max_payload)} MB")
        reply = self._client.with_retries(
            f"inference {self.runs + 1}",
            lambda: self._client.request(MsgType.INFER, {}, arrays, expect=MsgType.OUTPUT),
            restore=self._restore)
        self.last_device_ms = float(reply.fields.get("device_ms", float("nan")))
        self.last_device_total_ms = float(reply.fields.get("device_total_ms", float("nan")))
        self.runs += 1
        self._client.done = f"ran {self.runs} inference{'s' if self.runs > 1 else ''}"
        return list(reply.arrays)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._bundle.cleanup()


def device_hello(target: TargetHandle) -> dict[str, Any]:
    """Say HELLO, then BYE: the device's description (raises DeviceError when it does not answer)."""
    client = DeviceClient(target)
    try:
        return client.hello()
    finally:
        client.close()
