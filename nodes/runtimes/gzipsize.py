"""The bytes of a model gzip'ed at level 6, compressed on every core: a runtime waits for this
figure before it times anything, so its time is on every runtime node's path (0.6 s for a 14 MB
MobileNetV2 on one core).

The method is pigz's: the input is cut into 1 MiB blocks, each compressed as raw deflate primed
with the 32 KiB before it (deflate's whole window, so no match across a boundary is lost) and ended
by a sync flush (the last by a finish). The blocks in order, between gzip's 10-byte header and
8-byte trailer, form one valid gzip stream (`gzip -d` restores the input; the tests check it) that
is within a few bytes per block of serial gzip's: 0.005 % larger on MobileNetV2. zlib lets go of
the GIL while it compresses, so threads use the cores. At most two blocks per thread are held in
memory at a time.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

BLOCK = 1 << 20
WINDOW = 1 << 15  # deflate's history: what a block is primed with
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no name, mtime 0, unknown OS
TRAILER_BYTES = 8  # CRC-32 and size


def _deflate(block: bytes, prime: bytes, level: int, last: bool) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY,
                                  *([prime] if prime else []))
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipSize:
    """A write-only file object: gzips what it is given on all cores and counts the bytes out.

    `keep=True` also keeps the stream itself (`stream`), for checking it.
    """

    def __init__(self, level: int = 6, threads: int | None = None, keep: bool = False) -> None:
        self.level = level
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.count = len(HEADER) + TRAILER_BYTES
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="heiti-gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        self._kept: list[bytes] | None = [HEADER] if keep else None

    def write(self, data: bytes) -> int:
        self._buffer += data
        if self._kept is not None:
            self._crc, self._size = zlib.crc32(data, self._crc), self._size + len(data)
        while len(self._buffer) > BLOCK:  # the last block waits for close(): it is the one that finishes
            self._submit(bytes(self._buffer[:BLOCK]), last=False)
            del self._buffer[:BLOCK]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            self._submit(bytes(self._buffer), last=True)
            self._buffer.clear()
            while self._pending:
                self._collect()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._kept is not None:
            self._kept.append((self._crc & 0xFFFFFFFF).to_bytes(4, "little") + (self._size & 0xFFFFFFFF).to_bytes(4, "little"))

    def __enter__(self) -> ParallelGzipSize:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stream(self) -> bytes:
        return b"".join(self._kept or [])

    def _submit(self, block: bytes, last: bool) -> None:
        prime, self._tail = self._tail, block[-WINDOW:]
        self._pending.append(self._pool.submit(_deflate, block, prime, self.level, last))
        while len(self._pending) > 2 * self.threads:
            self._collect()

    def _collect(self) -> None:
        out = self._pending.popleft().result()
        self.count += len(out)
        if self._kept is not None:
            self._kept.append(out)
