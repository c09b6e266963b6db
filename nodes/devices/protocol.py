"""The wire protocol between a host and `heiti serve` on a device (docs/protocol.md).

A frame is a 20-byte header, a payload and a CRC32 trailer:

    magic(4) version(1) type(1) flags(2) seq(4) length(4) header_crc(4) | payload | payload_crc(4)

all big-endian. The header carries its own CRC so that a receiver that lost sync can tell a real
frame start from the same four magic bytes inside a payload, and can trust `length` before the
payload arrives (an oversize frame is refused at once). A payload is one message: a JSON object,
then binary blobs (npy-encoded arrays, or one raw data chunk for uploads). Never pickle.

Pure Python and numpy: the device side imports this without any framework.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

import numpy as np
from heiti.nodes.devices.transport import LinkTimeout
from numpy.lib import format as npy_format

try:  # the same CRC-32, ~25x faster where the optional zlib-ng package is installed
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32

MAGIC = b"\xa5HTI"
VERSION = 1
_HEAD = struct.Struct(">4sBBHII")  # magic, version, type, flags, seq, payload length
_U32 = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + 4
TRAILER_SIZE = 4
FRAME_OVERHEAD = HEADER_SIZE + TRAILER_SIZE
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024
#: a device's frame limit before a successful HELLO: enough for any HELLO, little for a stranger
PRE_HELLO_MAX_PAYLOAD = 64 * 1024
#: slowest transfer a started frame is allowed (bytes/s) on a link of unknown speed, so a frame
#: must complete within frame_timeout + length / min_rate of its first byte however it trickles
DEFAULT_MIN_RATE = 64 * 1024  # 512 kbit/s: a poor Wi-Fi or mobile link still carries a 1 MiB chunk
MAX_JSON_BYTES = 1024 * 1024
#: first bytes of an HTTP request (a browser page posting to 127.0.0.1): never a frame
HTTP_STARTS = (b"GET ", b"POST ", b"OPTIONS ", b"HEAD ", b"PUT ", b"DELETE ", b"PATCH ", b"CONNECT ",
               b"TRACE ", b"PRI * HTTP")
_BLOB_ALIGN = 64  # npy data then starts 64-byte aligned within the payload
_MAX_NPY_HEADER = 65536


class MsgType(IntEnum):
    HELLO = 0x01
    PING = 0x02
    BYE = 0x03
    UPLOAD_MODEL = 0x10
    LOAD = 0x11
    INFER = 0x12
    OUTPUT = 0x13
    STATS = 0x14
    OK = 0x15
    ERROR = 0x7F


class Flags(IntFlag):
    NONE = 0
    REPLY = 0x0001


class ErrorCode(IntEnum):
    BAD_CRC = 1
    BAD_HEADER = 2
    OVERSIZE = 3
    TRUNCATED = 4
    GARBAGE = 5
    UNSUPPORTED_VERSION = 6
    BAD_MESSAGE = 7
    UNKNOWN_TYPE = 8
    UNAUTHORIZED = 9
    HELLO_FIRST = 10
    BAD_REQUEST = 11
    UPLOAD_MISMATCH = 12
    UNSAFE_ARCHIVE = 13
    NO_MODEL = 14
    RUNTIME_UNAVAILABLE = 15
    LOAD_FAILED = 16
    NO_SESSION = 17
    INFER_FAILED = 18
    TOO_LARGE = 19
    INTERNAL = 20
    BUSY = 21
    NATIVE_REFUSED = 22


#: errors about the bytes on the wire: resending the same request may well succeed
TRANSIENT_ERRORS = frozenset({ErrorCode.BAD_CRC, ErrorCode.BAD_HEADER, ErrorCode.TRUNCATED, ErrorCode.GARBAGE})


class ProtocolError(Exception):
    """A frame or message that cannot be accepted. `seq` is set when the frame header was readable."""

    def __init__(self, code: ErrorCode, message: str, seq: int | None = None, fatal: bool = False) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.seq = seq
        #: the stream is not this protocol at all (HTTP, endless noise): close the link
        self.fatal = fatal

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_ERRORS


@dataclass
class Frame:
    type: int
    flags: int
    seq: int
    payload: bytes | bytearray | memoryview


@dataclass
class Message:
    """A decoded payload: JSON fields, arrays, and at most one raw data blob."""

    type: int
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: list[np.ndarray] = field(default_factory=list)
    data: memoryview | bytes | None = None
    seq: int = 0
    flags: int = 0

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & Flags.REPLY)


# --- frames ---------------------------------------------------------------------------------------
Buffer = bytes | bytearray | memoryview


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def frame_header(msg_type: int, length: int, seq: int = 0, flags: int = 0) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, int(msg_type), int(flags), seq & 0xFFFFFFFF, length)
    return head + _U32.pack(crc32(head))


def frame_trailer(parts: Sequence[Buffer]) -> bytes:
    crc = 0
    for part in parts:
        crc = crc32(part, crc)
    return _U32.pack(crc)


def encode_frame(msg_type: int, parts: Sequence[Buffer], seq: int = 0, flags: int = 0) -> list[Buffer]:
    """Frame the payload `parts` without joining them: the list goes to a scatter-gather write."""
    length = sum(_nbytes(p) for p in parts)
    return [frame_header(msg_type, length, seq, flags), *parts, frame_trailer(parts)]


class FrameParser:
    """Incremental frame reader: `feed` bytes, then call `next_frame` until it returns None.

    `next_frame` raises ProtocolError for a bad frame only after consuming at least one byte, so a
    caller that keeps calling always makes progress and resynchronises on the next valid header.
    The payload CRC is updated as bytes arrive, overlapping the check with the transfer.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, max_garbage: int | None = None,
                 reject_http: bool = False) -> None:
        self.max_payload = int(max_payload)
        #: bytes skipped before the first valid frame that end the stream (None: no cap)
        self.max_garbage = max_garbage
        self.frames = 0  # valid frames read so far
        self.garbage = 0  # bytes skipped before the first valid frame
        self._check_http = reject_http
        self._buf = bytearray()
        self._head: tuple[int, int, int, int] | None = None  # type, flags, seq, length
        self._crc = 0
        self._crc_done = 0
        self._skip = 0  # bytes of a refused (oversize, other version) frame still to discard

    def feed(self, data: Buffer) -> None:
        if not data:
            return
        if self._skip:
            n = min(self._skip, _nbytes(data))
            self._skip -= n
            data = memoryview(data)[n:]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (or of a refused one) has arrived but not the rest."""
        if self._head is not None or self._skip > 0:
            return True
        return bool(self._buf) and MAGIC.startswith(bytes(self._buf[:4]))

    @property
    def frame_length(self) -> int:
        """Bytes of the frame in progress still due (its declared size; a refused one's rest)."""
        if self._head is not None:
            return self._head[3] + FRAME_OVERHEAD
        return self._skip + (HEADER_SIZE if self._buf else 0)

    def discard_partial(self) -> tuple[int, int | None]:
        """Drop an incomplete frame (the link stalled mid-frame): (bytes dropped, its seq if known)."""
        seq = self._head[2] if self._head is not None else None
        dropped = len(self._buf) + self._skip
        if self._buf:
            # the stalled frame's bytes may hide a later frame start: keep what follows its magic
            nxt = self._buf.find(MAGIC, 1)
            if nxt > 0:
                dropped = nxt
                del self._buf[:nxt]
            else:
                self._buf.clear()
        self._head, self._skip, self._crc, self._crc_done = None, 0, 0, 0
        return dropped, seq

    def next_frame(self) -> Frame | None:
        buf = self._buf
        if self._check_http and not self._http_checked():
            return None
        if self._head is None:
            if not self._find_header():
                return None
        assert self._head is not None
        msg_type, flags, seq, length = self._head
        have = min(len(buf) - HEADER_SIZE, length)
        if have > self._crc_done:
            with memoryview(buf) as view:
                self._crc = crc32(view[HEADER_SIZE + self._crc_done : HEADER_SIZE + have], self._crc)
            self._crc_done = have
        end = HEADER_SIZE + length + TRAILER_SIZE
        if len(buf) < end:
            return None
        (sent_crc,) = _U32.unpack_from(buf, HEADER_SIZE + length)
        payload: bytearray | memoryview
        if len(buf) == end and length >= 4096:
            # the buffer holds just this frame: hand it over instead of copying the payload out
            payload = memoryview(buf)[HEADER_SIZE : HEADER_SIZE + length]
            self._buf = bytearray()
        else:
            payload = buf[HEADER_SIZE : HEADER_SIZE + length]
            del buf[:end]
        crc = self._crc
        self._head, self._crc, self._crc_done = None, 0, 0
        if crc != sent_crc:
            raise ProtocolError(ErrorCode.BAD_CRC, f"payload CRC mismatch in a {length}-byte frame", seq)
        self.frames += 1
        return Frame(msg_type, flags, seq, payload)

    def _http_checked(self) -> bool:
        """False while the stream's first bytes could still be an HTTP request line; raises once
        they are one (a browser page talking to the port is never served)."""
        head = bytes(self._buf[:16])
        if not head:
            return False
        for start in HTTP_STARTS:
            if head.startswith(start):
                self._buf.clear()  # consumed, like every error; the caller closes the link
                self._check_http = False
                raise ProtocolError(ErrorCode.GARBAGE, f"an HTTP request ({start.decode().strip()} …), not a frame",
                                    fatal=True)
            if start.startswith(head):
                return False
        self._check_http = False
        return True

    def _skipped(self, n: int, code: ErrorCode, message: str, seq: int | None = None) -> ProtocolError:
        """The error for `n` dropped bytes; fatal once too much came before any valid frame."""
        if self.frames == 0:
            self.garbage += n
            if self.max_garbage is not None and self.garbage > self.max_garbage:
                return ProtocolError(code, f"{message}; {self.garbage} bytes and no valid frame yet", seq, fatal=True)
        return ProtocolError(code, message, seq)

    def _refuse(self, length: int) -> None:
        """Drop a refused frame whole: its header, and its payload as it arrives (never parsed)."""
        rest = length + TRAILER_SIZE
        available = len(self._buf) - HEADER_SIZE
        del self._buf[: HEADER_SIZE + min(rest, available)]
        self._skip = max(0, rest - available)

    def _find_header(self) -> bool:
        buf = self._buf
        start = buf.find(MAGIC)
        if start < 0:
            keep = next((k for k in (3, 2, 1) if len(buf) >= k and buf[-k:] == MAGIC[:k]), 0)
            dropped = len(buf) - keep
            del buf[:dropped]
            if dropped:
                raise self._skipped(dropped, ErrorCode.GARBAGE, f"skipped {dropped} bytes that are not a frame")
            return False
        if start > 0:
            del buf[:start]
            raise self._skipped(start, ErrorCode.GARBAGE, f"skipped {start} bytes before a frame start")
        if len(buf) < HEADER_SIZE:
            return False
        magic, version, msg_type, flags, seq, length = _HEAD.unpack_from(buf, 0)
        (head_crc,) = _U32.unpack_from(buf, _HEAD.size)
        if crc32(memoryview(buf)[: _HEAD.size]) != head_crc:
            del buf[:1]
            raise self._skipped(1, ErrorCode.BAD_HEADER, "frame header CRC mismatch")
        if version != VERSION:
            self._refuse(length)
            raise self._skipped(HEADER_SIZE + length + TRAILER_SIZE, ErrorCode.UNSUPPORTED_VERSION,
                                f"protocol version {version}; this side speaks {VERSION} "
                                f"(its {length}-byte payload is skipped)", seq)
        if length > self.max_payload:
            self._refuse(length)
            raise ProtocolError(
                ErrorCode.OVERSIZE, f"frame of {length} bytes over the limit of {self.max_payload}", seq)
        self._head = (msg_type, flags, seq, length)
        self._crc, self._crc_done = 0, 0
        return True


# --- messages -------------------------------------------------------------------------------------
def _pad(n: int) -> bytes:
    return b"\0" * (-n % _BLOB_ALIGN)


def npy_parts(array: np.ndarray) -> list[Buffer]:
    """An array as npy bytes (header, data) without copying C-contiguous data."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays cannot be sent (never pickle)")
    head = io.BytesIO()
    header = npy_format.header_data_from_array_1_0(array)
    try:
        npy_format.write_array_header_1_0(head, header)
    except ValueError:
        npy_format.write_array_header_2_0(head, header)
    return [head.getvalue(), memoryview(array.reshape(-1).view(np.uint8))]


def encode_message(fields: dict[str, Any], arrays: Iterable[np.ndarray] = (), data: Buffer | None = None) -> list[Buffer]:
    """Payload parts: u32 JSON length, JSON {fields, arrays: [sizes], data: size}, then 64-byte
    aligned blobs (the npy arrays, then `data`)."""
    blobs = [npy_parts(a) for a in arrays]
    meta: dict[str, Any] = {"fields": fields, "arrays": [sum(_nbytes(p) for p in blob) for blob in blobs]}
    if data is not None:
        blobs.append([data])
        meta["data"] = _nbytes(data)
    text = json.dumps(meta, separators=(",", ":"), default=str).encode()  # paths and the like as text
    parts: list[Buffer] = [_U32.pack(len(text)) + text]
    offset = 4 + len(text)
    for blob in blobs:
        pad = _pad(offset)
        if pad:
            parts.append(pad)
            offset += len(pad)
        parts.extend(blob)
        offset += sum(_nbytes(p) for p in blob)
    return parts


def decode_message(frame: Frame) -> Message:
    """Parse a frame's payload; any malformed content raises ProtocolError(BAD_MESSAGE)."""
    try:
        return _decode(frame)
    except ProtocolError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the bytes were, the answer is one error code
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed message: {type(err).__name__}: {err}", frame.seq) from None


def _bad(message: str, seq: int) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message, seq)


def _decode(frame: Frame) -> Message:
    payload = memoryview(frame.payload)
    if payload.nbytes < 4:
        raise _bad("payload shorter than its JSON length", frame.seq)
    (json_len,) = _U32.unpack_from(payload, 0)
    if json_len > min(MAX_JSON_BYTES, payload.nbytes - 4):
        raise _bad(f"JSON length {json_len} does not fit the payload", frame.seq)
    meta = json.loads(bytes(payload[4 : 4 + json_len]).decode("utf-8"))
    if not isinstance(meta, dict):
        raise _bad("message header is not a JSON object", frame.seq)
    fields = meta.get("fields", {})
    sizes = meta.get("arrays", [])
    data_size = meta.get("data")
    if not isinstance(fields, dict):
        raise _bad("message fields are not a JSON object", frame.seq)
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise _bad("bad array table", frame.seq)
    if data_size is not None and (not isinstance(data_size, int) or data_size < 0):
        raise _bad("bad data size", frame.seq)
    offset = 4 + json_len
    arrays = []
    for size in sizes:
        offset += -offset % _BLOB_ALIGN
        if offset + size > payload.nbytes:
            raise _bad("array blob runs past the payload", frame.seq)
        arrays.append(decode_npy(payload[offset : offset + size], frame.seq))
        offset += size
    data = None
    if data_size is not None:
        offset += -offset % _BLOB_ALIGN
        if offset + data_size > payload.nbytes:
            raise _bad("data blob runs past the payload", frame.seq)
        data = payload[offset : offset + data_size]
    return Message(frame.type, fields, arrays, data, frame.seq, frame.flags)


#: parsed npy headers: the same few shapes repeat for every inference, and parsing is slow
_npy_headers: dict[bytes, tuple[Any, bool, np.dtype]] = {}


def decode_npy(blob: memoryview, seq: int = 0) -> np.ndarray:
    """An npy blob as an array viewing the payload (no copy); object dtypes are refused."""
    if blob.nbytes < 10 or bytes(blob[:6]) != b"\x93NUMPY":
        raise _bad("array blob is not npy", seq)
    major = blob[6]
    if major == 1:
        start, (hlen,) = 10, struct.unpack_from("<H", blob, 8)
    elif major in (2, 3) and blob.nbytes >= 12:
        start, (hlen,) = 12, struct.unpack_from("<I", blob, 8)
    else:
        raise _bad(f"npy version {major} is not supported", seq)
    end = start + hlen
    if hlen > _MAX_NPY_HEADER or end > blob.nbytes:
        raise _bad("npy header too long", seq)
    text = bytes(blob[start:end])
    known = _npy_headers.get(text)
    if known is None:
        fp = io.BytesIO(b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + text)
        npy_format.read_magic(fp)
        known = npy_format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
        if len(_npy_headers) > 256:
            _npy_headers.clear()
        _npy_headers[text] = known
    shape, fortran, dtype = known
    if dtype.hasobject:
        raise _bad("object arrays are refused (they would need pickle)", seq)
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            raise _bad(f"bad array shape {shape}", seq)
        count *= dim
    if count * dtype.itemsize != blob.nbytes - end:
        raise _bad(f"array of shape {shape} {dtype} does not match its {blob.nbytes - end} data bytes", seq)
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype)
    array = np.frombuffer(blob, dtype=dtype, count=count, offset=end)
    return array.reshape(shape, order="F" if fortran else "C")


def frame_message(
    msg_type: int,
    fields: dict[str, Any] | None = None,
    arrays: Iterable[np.ndarray] = (),
    data: Buffer | None = None,
    seq: int = 0,
    reply: bool = False,
) -> list[Buffer]:
    """Encode a message and frame it: the buffers to write, in order."""
    parts = encode_message(fields or {}, arrays, data)
    return encode_frame(msg_type, parts, seq, Flags.REPLY if reply else Flags.NONE)


def error_fields(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": int(code), "name": code.name, "message": message, **extra}


class Channel:
    """Messages over a byte stream: a transport (read/write with timeouts) plus a FrameParser.

    `receive` returns None when nothing complete arrived in `timeout` s. A started frame is dropped
    with ProtocolError(TRUNCATED) when no byte came for `frame_timeout` s, and also when it is not
    complete within frame_timeout + length / min_rate s of its first byte, so trickling bytes can
    never hold a reader. `hard_deadline` (monotonic time) ends every wait with LinkTimeout: the
    device's total time to HELLO. Bad frames raise ProtocolError after resync.
    """

    def __init__(self, transport: Any, max_payload: int = DEFAULT_MAX_PAYLOAD, frame_timeout: float = 5.0,
                 min_rate: float | None = None, max_garbage: int | None = None, reject_http: bool = False) -> None:
        self.transport = transport
        self.parser = FrameParser(max_payload, max_garbage, reject_http)
        self.frame_timeout = frame_timeout
        line_rate = getattr(transport, "rate", None)
        self.min_rate = float(min_rate or (0.5 * line_rate if line_rate else DEFAULT_MIN_RATE))
        self.hard_deadline: float | None = None
        self._frame_start: float | None = None

    def send(
        self,
        msg_type: int,
        fields: dict[str, Any] | None = None,
        arrays: Iterable[np.ndarray] = (),
        data: Buffer | None = None,
        seq: int = 0,
        reply: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.transport.write(frame_message(msg_type, fields, arrays, data, seq, reply), timeout)

    def _track(self, now: float) -> None:
        if not self.parser.in_frame:
            self._frame_start = None
        elif self._frame_start is None:
            self._frame_start = now

    def receive(self, timeout: float) -> Message | None:
        now = time.monotonic()
        deadline = now + timeout
        last_byte = now
        while True:
            try:
                frame = self.parser.next_frame()
            finally:
                self._track(time.monotonic())
            if frame is not None:
                return decode_message(frame)
            now = time.monotonic()
            if self.hard_deadline is not None and now >= self.hard_deadline:
                raise LinkTimeout("the time allowed to this link is up")
            if self._frame_start is not None:
                due = self._frame_start + self.frame_timeout + min(self.parser.frame_length, 1 << 31) / self.min_rate
                stall = last_byte + self.frame_timeout
                if now >= min(due, stall):
                    why = (f"no byte for {self.frame_timeout:g}s" if now >= stall
                           else f"not complete {now - self._frame_start:.1f}s after its first byte")
                    dropped, seq = self.parser.discard_partial()
                    self._frame_start = None
                    raise ProtocolError(ErrorCode.TRUNCATED, f"frame stalled: {why}, dropped {dropped} bytes", seq)
                wait = min(due, stall) - now
            else:
                wait = deadline - now
                if wait <= 0:
                    return None
            if self.hard_deadline is not None:
                wait = min(wait, self.hard_deadline - now)
            data = self.transport.read(max(0.0, wait))
            if data:
                self.parser.feed(data)
                last_byte = time.monotonic()
                self._track(last_byte)

    def close(self) -> None:
        self.transport.close()
