"""Messages over a byte stream: a transport plus a frame parser, with the per-frame time limits
that keep a trickling or stalled sender from holding a reader."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from heiti.nodes.devices.framing import DEFAULT_MAX_PAYLOAD, Buffer, FrameParser
from heiti.nodes.devices.messages import Message, decode_message, frame_message
from heiti.nodes.devices.protocol_codes import ErrorCode, ProtocolError
from heiti.nodes.devices.transport import LinkTimeout

#: slowest transfer a started frame is allowed (bytes/s) on a link of unknown speed, so a frame
#: must complete within frame_timeout + length / min_rate of its first byte however it trickles
DEFAULT_MIN_RATE = 64 * 1024  # 512 kbit/s: a poor Wi-Fi or mobile link still carries a 1 MiB chunk


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
