"""The wire format: message round trips, resynchronisation after damage, and fuzzing of the parser."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from heiti.nodes.devices.protocol import (
    HEADER_SIZE,
    MAGIC,
    Channel,
    ErrorCode,
    Frame,
    FrameParser,
    MsgType,
    ProtocolError,
    decode_message,
    encode_frame,
    frame_message,
)
from heiti.nodes.devices.transport import TcpTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def wire(*frames: list) -> bytes:
    return b"".join(bytes(part) for frame in frames for part in frame)


def parse_all(parser: FrameParser, data: bytes, chunk: int = 1 << 30) -> tuple[list[Frame], list[ProtocolError]]:
    frames, errors = [], []
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        while True:
            try:
                frame = parser.next_frame()
            except ProtocolError as err:
                errors.append(err)
                continue
            if frame is None:
                break
            frames.append(frame)
    return frames, errors


ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([-128, 0, 127], dtype=np.int8),
    np.zeros((0, 5), dtype=np.int64),
    np.array(3.5, dtype=np.float64),
    np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    np.arange(4, dtype=">f4"),
    np.array([True, False]),
    np.ones((2, 2), dtype=np.float16),
]


def test_message_round_trip_keeps_fields_arrays_and_data() -> None:
    frame_parts = frame_message(MsgType.INFER, {"a": 1, "s": "ü"}, ARRAYS, data=b"chunk", seq=77)
    frames, errors = parse_all(FrameParser(), wire(frame_parts))
    assert errors == [] and len(frames) == 1
    msg = decode_message(frames[0])
    assert (msg.type, msg.seq, msg.fields, bytes(msg.data)) == (MsgType.INFER, 77, {"a": 1, "s": "ü"}, b"chunk")
    assert len(msg.arrays) == len(ARRAYS)
    for got, want in zip(msg.arrays, ARRAYS, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_large_array_survives_byte_by_byte_and_odd_chunking() -> None:
    big = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    data = wire(frame_message(MsgType.INFER, {}, [big], seq=1), frame_message(MsgType.PING, seq=2))
    for chunk in (1, 7, 4096):
        frames, errors = parse_all(FrameParser(), data, chunk)
        assert errors == [] and [f.seq for f in frames] == [1, 2]
        np.testing.assert_array_equal(decode_message(frames[0]).arrays[0], big)


def test_garbage_between_frames_is_skipped_and_reported() -> None:
    data = b"\x00junk" + wire(frame_message(MsgType.PING, seq=1)) + b"more noise \xa5H" + wire(frame_message(MsgType.PING, seq=2))
    frames, errors = parse_all(FrameParser(), data)
    assert [f.seq for f in frames] == [1, 2]
    assert errors and all(e.code == ErrorCode.GARBAGE for e in errors)


def test_bad_payload_crc_names_the_frame_and_the_next_frame_still_arrives() -> None:
    damaged = bytearray(wire(frame_message(MsgType.INFER, {"x": 1}, seq=9)))
    damaged[HEADER_SIZE + 6] ^= 0x40
    frames, errors = parse_all(FrameParser(), bytes(damaged) + wire(frame_message(MsgType.PING, seq=10)))
    assert [(e.code, e.seq) for e in errors] == [(ErrorCode.BAD_CRC, 9)]
    assert [f.seq for f in frames] == [10]


def test_bad_header_crc_resynchronises() -> None:
    damaged = bytearray(wire(frame_message(MsgType.PING, seq=3)))
    damaged[13] ^= 0x01  # inside the length field
    frames, errors = parse_all(FrameParser(), bytes(damaged) + wire(frame_message(MsgType.PING, seq=4)))
    assert errors[0].code == ErrorCode.BAD_HEADER
    assert [f.seq for f in frames] == [4]


def test_oversize_frame_is_refused_from_its_header_alone() -> None:
    parser = FrameParser(max_payload=1000)
    big = wire(frame_message(MsgType.UPLOAD_MODEL, data=b"\x01" * 5000, seq=5))
    parser.feed(big[:HEADER_SIZE])  # the payload has not even arrived
    with pytest.raises(ProtocolError) as info:
        parser.next_frame()
    assert (info.value.code, info.value.seq) == (ErrorCode.OVERSIZE, 5)
    frames, errors = parse_all(parser, big[HEADER_SIZE:] + wire(frame_message(MsgType.PING, seq=6)))
    assert errors == [] and [f.seq for f in frames] == [6]


def test_truncated_frame_is_dropped_and_the_next_one_parses() -> None:
    parser = FrameParser()
    whole = wire(frame_message(MsgType.INFER, {"k": "v"}, seq=11))
    parser.feed(whole[:-5])
    assert parser.next_frame() is None and parser.in_frame
    dropped, seq = parser.discard_partial()
    assert dropped == len(whole) - 5 and seq == 11 and not parser.in_frame
    frames, errors = parse_all(parser, wire(frame_message(MsgType.PING, seq=12)))
    assert errors == [] and [f.seq for f in frames] == [12]


def test_other_protocol_version_is_refused() -> None:
    raw = bytearray(wire(frame_message(MsgType.PING, seq=1)))
    raw[4] = 9
    raw[16:20] = struct.pack(">I", zlib.crc32(bytes(raw[:16])))
    frames, errors = parse_all(FrameParser(), bytes(raw) + wire(frame_message(MsgType.PING, seq=2)))
    assert errors[0].code == ErrorCode.UNSUPPORTED_VERSION
    assert [f.seq for f in frames] == [2]


def test_refused_version_frame_is_skipped_whole_never_parsed_as_frames() -> None:
    """A frame of another version whose payload holds a complete valid frame: the inner frame must
    not surface (it would be a request smuggled past the version check)."""
    inner = wire(frame_message(MsgType.PING, seq=66))
    raw = bytearray(wire(encode_frame(MsgType.INFER, [inner], seq=5)))
    raw[4] = 2
    raw[16:20] = struct.pack(">I", zlib.crc32(bytes(raw[:16])))
    for chunk in (1, 13, 1 << 20):
        frames, errors = parse_all(FrameParser(), bytes(raw) + wire(frame_message(MsgType.PING, seq=67)), chunk)
        assert [(e.code, e.seq) for e in errors] == [(ErrorCode.UNSUPPORTED_VERSION, 5)]
        assert [f.seq for f in frames] == [67]


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n",
                                   b"HEAD / HTTP/1.0\r\n", b"PUT /a HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM"])
def test_http_request_line_is_fatal_even_byte_by_byte(start: bytes) -> None:
    data = start + wire(frame_message(MsgType.HELLO, {"protocol": 1}, seq=1))
    frames, errors = parse_all(FrameParser(reject_http=True), data, chunk=1)
    assert errors and errors[0].fatal and "HTTP" in errors[0].message
    assert not any(e.fatal for e in parse_all(FrameParser(), data)[1])  # only where asked for (TCP servers)
    # bytes that merely begin like a method are no request
    frames, errors = parse_all(FrameParser(reject_http=True), b"GE" + wire(frame_message(MsgType.PING, seq=2)))
    assert [f.seq for f in frames] == [2] and not any(e.fatal for e in errors)


def test_garbage_before_the_first_frame_is_capped() -> None:
    noise = bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)).replace(MAGIC[:1], b"x")
    frames, errors = parse_all(FrameParser(max_garbage=4096), noise, chunk=512)
    assert errors[-1].fatal and frames == []
    # after a valid frame, noise is skipped (and reported) without end
    parser = FrameParser(max_garbage=4096)
    frames, errors = parse_all(parser, wire(frame_message(MsgType.PING, seq=1)) + noise * 3, chunk=512)
    assert [f.seq for f in frames] == [1] and errors and not any(e.fatal for e in errors)


def test_channel_frame_deadline_counts_from_the_first_byte_not_the_last() -> None:
    """Bytes trickling in faster than the stall timeout do not keep a frame alive past its time."""
    a, b = socket.socketpair()
    sender = TcpTransport(a, "a")
    channel = Channel(TcpTransport(b, "b"), frame_timeout=0.4, min_rate=1e6)
    try:
        whole = wire(frame_message(MsgType.INFER, {"x": 1}, [np.zeros(100, np.float32)], seq=31))
        stop = threading.Event()

        def trickle() -> None:
            for i in range(len(whole)):  # one byte per 0.05 s: never a 0.4 s gap
                if stop.wait(0.05):
                    return
                sender.write([whole[i : i + 1]], timeout=1)

        thread = threading.Thread(target=trickle, daemon=True)
        started = time.monotonic()
        thread.start()
        with pytest.raises(ProtocolError) as info:
            channel.receive(timeout=10)
        assert info.value.code == ErrorCode.TRUNCATED and "first byte" in info.value.message
        assert time.monotonic() - started < 0.05 + 0.4 + 0.3
    finally:
        stop.set()
        thread.join(2)
        sender.close()
        channel.close()


def test_channel_hard_deadline_ends_every_wait() -> None:
    from heiti.nodes.devices.transport import LinkTimeout

    a, b = socket.socketpair()
    sender = TcpTransport(a, "a")
    channel = Channel(TcpTransport(b, "b"), frame_timeout=5)
    channel.hard_deadline = time.monotonic() + 0.3
    try:
        sender.write([MAGIC[:2]], timeout=1)  # a frame start that never goes on
        started = time.monotonic()
        with pytest.raises(LinkTimeout):
            channel.receive(timeout=10)
        assert time.monotonic() - started < 1.0
    finally:
        sender.close()
        channel.close()


def test_object_arrays_are_never_pickled() -> None:
    with pytest.raises(ValueError, match="pickle"):
        frame_message(MsgType.INFER, {}, [np.array([{"a": 1}], dtype=object)])
    # a hand-made npy blob that declares an object dtype is refused on decode
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    blob = head.getvalue() + b"\x80\x04N."  # pickled None
    meta = b'{"fields":{},"arrays":[%d]}' % len(blob)
    payload = struct.pack(">I", len(meta)) + meta + b"\0" * (-(4 + len(meta)) % 64) + blob
    frames, _ = parse_all(FrameParser(), wire(encode_frame(MsgType.INFER, [payload], seq=1)))
    with pytest.raises(ProtocolError) as info:
        decode_message(frames[0])
    assert info.value.code == ErrorCode.BAD_MESSAGE


def test_channel_reports_a_stalled_frame_as_truncated() -> None:
    a, b = socket.socketpair()
    sender = TcpTransport(a, "a")
    channel = Channel(TcpTransport(b, "b"), frame_timeout=0.2)
    try:
        whole = wire(frame_message(MsgType.INFER, {"x": 1}, [np.zeros(100, np.float32)], seq=21))
        sender.write([whole[: len(whole) // 2]], timeout=1)
        started = time.monotonic()
        with pytest.raises(ProtocolError) as info:
            channel.receive(timeout=5)
        assert info.value.code == ErrorCode.TRUNCATED and info.value.seq == 21
        assert time.monotonic() - started < 2
        sender.write(frame_message(MsgType.PING, seq=22), timeout=1)
        assert channel.receive(timeout=2).seq == 22
        assert channel.receive(timeout=0.05) is None
    finally:
        sender.close()
        channel.close()


# --- fuzzing ------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=600), st.integers(min_value=16, max_value=4096))
def test_fuzz_parser_only_raises_protocol_errors(data: bytes, chunk: int, limit: int) -> None:
    parser = FrameParser(max_payload=limit)
    for frame in parse_all(parser, MAGIC + data, chunk)[0] + parse_all(parser, data, chunk)[0]:
        try:
            decode_message(frame)
        except ProtocolError:
            pass
    parser.discard_partial()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_message_decoder_only_raises_protocol_errors(payload: bytes) -> None:
    for body in (payload, struct.pack(">I", min(len(payload), 60)) + payload):
        try:
            decode_message(Frame(MsgType.INFER, 0, 1, body))
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=200).filter(lambda b: MAGIC[:1] not in b),
                          st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)), max_size=6),
       st.integers(min_value=1, max_value=300))
def test_fuzz_every_frame_behind_noise_is_recovered(items: list, chunk: int) -> None:
    stream = b"".join(noise + wire(frame_message(MsgType.OK, fields, seq=i + 1)) for i, (noise, fields) in enumerate(items))
    frames, errors = parse_all(FrameParser(), stream, chunk)
    assert [f.seq for f in frames] == [i + 1 for i in range(len(items))]
    assert [decode_message(f).fields for f in frames] == [fields for _, fields in items]
    assert all(e.code == ErrorCode.GARBAGE for e in errors)


_VALID_STREAM = wire(
    frame_message(MsgType.INFER, {"k": [1, 2]}, [np.arange(20, dtype=np.float32).reshape(4, 5)], seq=1),
    frame_message(MsgType.UPLOAD_MODEL, {"offset": 0}, data=b"abc" * 30, seq=2),
    frame_message(MsgType.PING, seq=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID_STREAM) - 1), st.integers(1, 255)), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=400), st.integers(0, 40))
def test_fuzz_damaged_valid_frames_only_raise_protocol_errors(flips: list, chunk: int, cut: int) -> None:
    damaged = bytearray(_VALID_STREAM)
    for pos, xor in flips:
        damaged[pos] ^= xor
    frames, _ = parse_all(FrameParser(max_payload=4096), bytes(damaged[: len(damaged) - cut]), chunk)
    for frame in frames:  # a frame that passed both CRCs is one of the originals
        assert frame.seq in (1, 2, 3)
        try:
            decode_message(frame)
        except ProtocolError:
            pass
