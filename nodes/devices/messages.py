"""Messages of the device protocol: a JSON object then aligned binary blobs (npy arrays, or one
raw data chunk for uploads) inside a frame's payload. Never pickle: object arrays are refused.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from heiti.nodes.devices.framing import U32, Buffer, Frame, encode_frame, nbytes
from heiti.nodes.devices.protocol_codes import ErrorCode, Flags, ProtocolError
from numpy.lib import format as npy_format

MAX_JSON_BYTES = 1024 * 1024
_BLOB_ALIGN = 64  # npy data then starts 64-byte aligned within the payload
_MAX_NPY_HEADER = 65536


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
    meta: dict[str, Any] = {"fields": fields, "arrays": [sum(nbytes(p) for p in blob) for blob in blobs]}
    if data is not None:
        blobs.append([data])
        meta["data"] = nbytes(data)
    text = json.dumps(meta, separators=(",", ":"), default=str).encode()  # paths and the like as text
    parts: list[Buffer] = [U32.pack(len(text)) + text]
    offset = 4 + len(text)
    for blob in blobs:
        pad = _pad(offset)
        if pad:
            parts.append(pad)
            offset += len(pad)
        parts.extend(blob)
        offset += sum(nbytes(p) for p in blob)
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
    (json_len,) = U32.unpack_from(payload, 0)
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

