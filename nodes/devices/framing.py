"""Frames of the device protocol: header, payload and CRC trailer, and the incremental parser.

    magic(4) version(1) type(1) flags(2) seq(4) length(4) header_crc(4) | payload | payload_crc(4)

The header carries its own CRC so that a receiver that lost sync can tell a real frame start from
the same magic bytes inside a payload, and can trust `length` before the payload arrives.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from heiti.nodes.devices.protocol_codes import ErrorCode, ProtocolError

try:  # the same CRC-32, ~25x faster where the optional zlib-ng package is installed
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32

MAGIC = b"\xa5HTI"
VERSION = 1
_HEAD = struct.Struct(">4sBBHII")  # magic, version, type, flags, seq, payload length
U32 = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + 4
TRAILER_SIZE = 4
FRAME_OVERHEAD = HEADER_SIZE + TRAILER_SIZE
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024
#: a device's frame limit before a successful HELLO: enough for any HELLO, little for a stranger
PRE_HELLO_MAX_PAYLOAD = 64 * 1024
#: first bytes of an HTTP request (a browser page posting to 127.0.0.1): never a frame
HTTP_STARTS = (b"GET ", b"POST ", b"OPTIONS ", b"HEAD ", b"PUT ", b"DELETE ", b"PATCH ", b"CONNECT ",
               b"TRACE ", b"PRI * HTTP")


@dataclass
class Frame:
    type: int
    flags: int
    seq: int
    payload: bytes | bytearray | memoryview


Buffer = bytes | bytearray | memoryview


def nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def frame_header(msg_type: int, length: int, seq: int = 0, flags: int = 0) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, int(msg_type), int(flags), seq & 0xFFFFFFFF, length)
    return head + U32.pack(crc32(head))


def frame_trailer(parts: Sequence[Buffer]) -> bytes:
    crc = 0
    for part in parts:
        crc = crc32(part, crc)
    return U32.pack(crc)


def encode_frame(msg_type: int, parts: Sequence[Buffer], seq: int = 0, flags: int = 0) -> list[Buffer]:
    """Frame the payload `parts` without joining them: the list goes to a scatter-gather write."""
    length = sum(nbytes(p) for p in parts)
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
            n = min(self._skip, nbytes(data))
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
        (sent_crc,) = U32.unpack_from(buf, HEADER_SIZE + length)
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
        (head_crc,) = U32.unpack_from(buf, _HEAD.size)
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

