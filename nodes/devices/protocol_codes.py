"""Message types, flags and error codes of the device protocol, and its one exception.

Kept apart from framing and message encoding so that code which only names a code (the client's
retry rules, the server's replies) reads them from one small table (docs/protocol.md, "Errors").
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Any


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



def error_fields(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": int(code), "name": code.name, "message": message, **extra}
