"""The wire protocol between a host and `heiti serve` on a device (docs/protocol.md).

A frame is a 20-byte header, a payload and a CRC32 trailer:

    magic(4) version(1) type(1) flags(2) seq(4) length(4) header_crc(4) | payload | payload_crc(4)

all big-endian. The header carries its own CRC so that a receiver that lost sync can tell a real
frame start from the same four magic bytes inside a payload, and can trust `length` before the
payload arrives (an oversize frame is refused at once). A payload is one message: a JSON object,
then binary blobs (npy-encoded arrays, or one raw data chunk for uploads). Never pickle.

Pure Python and numpy: the device side imports this without any framework. The parts live in
protocol_codes.py (types, codes, the error), framing.py (frames and the parser), messages.py
(payload encoding) and channel.py (messages over a transport); this module names them all.
"""

from __future__ import annotations

from heiti.nodes.devices.channel import DEFAULT_MIN_RATE, Channel
from heiti.nodes.devices.framing import (
    DEFAULT_MAX_PAYLOAD,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    HTTP_STARTS,
    MAGIC,
    PRE_HELLO_MAX_PAYLOAD,
    TRAILER_SIZE,
    VERSION,
    Buffer,
    Frame,
    FrameParser,
    crc32,
    encode_frame,
    frame_header,
    frame_trailer,
)
from heiti.nodes.devices.messages import (
    MAX_JSON_BYTES,
    Message,
    decode_message,
    decode_npy,
    encode_message,
    frame_message,
    npy_parts,
)
from heiti.nodes.devices.protocol_codes import (
    TRANSIENT_ERRORS,
    ErrorCode,
    Flags,
    MsgType,
    ProtocolError,
    error_fields,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD", "DEFAULT_MIN_RATE", "FRAME_OVERHEAD", "HEADER_SIZE", "HTTP_STARTS", "MAGIC",
    "MAX_JSON_BYTES", "PRE_HELLO_MAX_PAYLOAD", "TRAILER_SIZE", "TRANSIENT_ERRORS", "VERSION", "Buffer", "Channel",
    "ErrorCode", "Flags", "Frame", "FrameParser", "Message", "MsgType", "ProtocolError", "crc32", "decode_message",
    "decode_npy", "encode_frame", "encode_message", "error_fields", "frame_header", "frame_message",
    "frame_trailer", "npy_parts",
]
