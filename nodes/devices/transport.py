"""Byte-stream links for the wire protocol: a TCP socket or a serial line, with timeouts.

Both ends write full-duplex: while a write waits for room, incoming bytes are read and kept, so two
peers writing large frames at each other never deadlock. Every blocking call has a timeout measured
as inactivity (no byte moved for that long), so a slow but living link is not cut off while a dead
one is noticed. pyserial is imported only when a serial port is opened.

A pseudo-terminal has no baud rate of its own; on one, writes are paced to baud/10 bytes per second
so that tests and benchmarks see the speed of the real line they stand in for.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview
_READ_CHUNK = 1 << 20
#: bytes a write keeps from the peer while it waits for room; past this it stops reading, so a peer
#: that streams requests but never reads replies meets a full socket instead of growing our memory
DEFAULT_MAX_PENDING = 4 * _READ_CHUNK


class LinkClosed(ConnectionError):
    """The peer closed the link, or it broke."""


class LinkTimeout(TimeoutError):
    """Nothing moved on the link for the allowed time."""


class Transport:
    """A full-duplex byte stream over a file descriptor, polled with select."""

    #: bytes per second the line can carry (None: as fast as the host can copy)
    rate: float | None = None

    def __init__(self, fd: int, name: str, pace_rate: float | None = None) -> None:
        self._fd = fd
        self.name = name
        self._pending: list[bytes] = []  # bytes read while a write was waiting
        self._pending_bytes = 0
        self.max_pending = DEFAULT_MAX_PENDING
        self._rbuf = bytearray(_READ_CHUNK)
        self._pace_rate = pace_rate
        self._pace_next = 0.0  # time at which the pacer allows the next byte
        self.closed = False
        self.bytes_sent = 0
        self.bytes_received = 0

    # --- subclass hooks -------------------------------------------------------------------------
    def _recv_into(self, view: memoryview) -> int:
        return os.readv(self._fd, [view])

    def _send(self, views: list[memoryview]) -> int:
        return os.writev(self._fd, views)

    # --- public ---------------------------------------------------------------------------------
    def fileno(self) -> int:
        return self._fd

    def read(self, timeout: float) -> bytes | memoryview:
        """Bytes that arrived, waiting up to `timeout` s; b"" on timeout. A returned memoryview is
        valid until the next call. Raises LinkClosed when the peer is gone."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            return data
        if self.closed:
            raise LinkClosed(f"{self.name}: link is closed")
        try:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        except (OSError, ValueError) as err:
            raise LinkClosed(f"{self.name}: {err}") from err
        if not ready:
            return b""
        return self._read_now()

    def _read_now(self) -> memoryview:
        view = memoryview(self._rbuf)
        try:
            n = self._recv_into(view)
        except (BlockingIOError, InterruptedError):
            return view[:0]
        except OSError as err:
            raise LinkClosed(f"{self.name}: {err.strerror or err}") from err
        if n == 0:
            raise LinkClosed(f"{self.name}: the other end closed the link")
        self.bytes_received += n
        return view[:n]

    def write(self, buffers: Sequence[Buffer], timeout: float) -> None:
        """Write every buffer in order; fail when no byte could be written for `timeout` s."""
        views = [memoryview(b).cast("B") if isinstance(b, memoryview) else memoryview(b) for b in buffers]
        views = [v for v in views if v.nbytes]
        total = sum(v.nbytes for v in views)
        done = 0
        last_progress = time.monotonic()
        while views:
            if self.closed:
                raise LinkClosed(f"{self.name}: link is closed")
            now = time.monotonic()
            budget = self._pace_budget(now)
            wait = max(0.0, last_progress + timeout - now)
            if wait <= 0:
                raise LinkTimeout(f"{self.name}: could not write for {timeout:g}s ({done} of {total} bytes sent)")
            want_write = budget > 0
            if not want_write:
                wait = min(wait, self._pace_next - now)
            reading = [self._fd] if self._pending_bytes < self.max_pending else []
            try:
                readable, writable, _ = select.select(reading, [self._fd] if want_write else [], [], wait)
            except (OSError, ValueError) as err:
                raise LinkClosed(f"{self.name}: {err}") from err
            if readable:
                chunk = self._read_now()
                if chunk:
                    self._pending.append(bytes(chunk))
                    self._pending_bytes += chunk.nbytes
            if not writable:
                continue
            batch = _take(views, budget)
            try:
                n = self._send(batch)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                raise LinkClosed(f"{self.name}: {err.strerror or err} ({done} of {total} bytes sent)") from err
            if n > 0:
                done += n
                self.bytes_sent += n
                last_progress = time.monotonic()
                self._pace_spent(n, last_progress)
                _advance(views, n)

    def _pace_budget(self, now: float) -> int:
        if not self._pace_rate:
            return 1 << 30
        if now >= self._pace_next:
            # a burst of 5 ms worth (at least 64 bytes) keeps the pacing exact without busy looping
            return max(64, int(self._pace_rate * 0.005))
        return 0

    def _pace_spent(self, n: int, now: float) -> None:
        if self._pace_rate:
            self._pace_next = max(self._pace_next, now - 0.005) + n / self._pace_rate

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass

    def abort(self) -> None:
        """End the link from another thread: the thread using it sees the link close and closes it
        itself (closing the descriptor here could hand its number to a new connection meanwhile)."""
        self.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take(views: list[memoryview], budget: int) -> list[memoryview]:
    out, left = [], budget
    for v in views[:64]:
        if left <= 0:
            break
        part = v[:left]
        out.append(part)
        left -= part.nbytes
    return out


def _advance(views: list[memoryview], n: int) -> None:
    while n and views:
        first = views[0]
        if first.nbytes <= n:
            n -= first.nbytes
            views.pop(0)
        else:
            views[0] = first[n:]
            n = 0


# --- TCP ------------------------------------------------------------------------------------------
class TcpTransport(Transport):
    def __init__(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock = sock
        super().__init__(sock.fileno(), name)

    def _recv_into(self, view: memoryview) -> int:
        return self.sock.recv_into(view)

    def _send(self, views: list[memoryview]) -> int:
        return self.sock.sendmsg(views)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `:PORT`, `PORT` or `[IPv6]:PORT` -> (host, port)."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.isdigit():
        host, port_text = "", text
    else:
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {address!r}: port {port} out of range")
    return host or default_host, port


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_tcp(address: str, timeout: float) -> TcpTransport:
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as err:
        raise LinkTimeout(f"tcp {host}:{port}: no answer within {timeout:g}s") from err
    except OSError as err:
        raise LinkClosed(f"tcp {host}:{port}: {err.strerror or err}") from err
    return TcpTransport(sock, f"tcp {host}:{port}")


def listen_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    return sock


# --- serial ---------------------------------------------------------------------------------------
def _is_pty(fd: int) -> bool:
    try:
        major = os.major(os.fstat(fd).st_rdev)
    except OSError:
        return False
    return 136 <= major <= 143  # Unix98 pseudo-terminal slaves


class SerialTransport(Transport):
    """A serial port opened with pyserial (8N1, raw), then driven through its file descriptor."""

    def __init__(self, port: str, baud: int, pace: bool | None = None) -> None:
        try:
            import serial  # pyserial
        except ImportError as err:  # pragma: no cover - pyserial is a dependency
            raise LinkClosed("serial links need pyserial (pip install pyserial)") from err
        if os.name != "posix":  # pragma: no cover - select() on a COM port does not exist
            raise LinkClosed("serial links are supported on Linux and macOS hosts and devices")
        try:
            self.port = serial.Serial(port=port, baudrate=baud, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkClosed(f"serial {port}: {err}") from err
        try:
            self.port.reset_input_buffer()  # bytes left over from an earlier conversation
        except (serial.SerialException, OSError):
            pass
        fd = self.port.fileno()
        os.set_blocking(fd, False)
        self.rate = baud / 10.0
        if pace is None:
            pace = _is_pty(fd)
        super().__init__(fd, f"serial {port} @ {baud} baud", pace_rate=self.rate if pace else None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.port.close()
            except Exception:  # noqa: BLE001 - closing a vanished device must not raise
                pass


class VirtualSerialLink:
    """Two pseudo-terminals joined back to back like a null-modem cable, for tests and benchmarks.

    Open `port_a` and `port_b` as serial ports; bytes written to one come out of the other.
    `corrupt` (a callable on each relayed chunk) lets fault tests damage bytes in flight.
    """

    def __init__(self) -> None:
        import tty

        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.ports: list[str] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
            self._slaves.append(slave)  # kept open so the master never sees a hang-up
            self.ports.append(os.ttyname(slave))
        self.corrupt = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="virtual-serial", daemon=True)
        self._thread.start()

    @property
    def port_a(self) -> str:
        return self.ports[0]

    @property
    def port_b(self) -> str:
        return self.ports[1]

    def _relay(self) -> None:
        a, b = self._masters
        pending = {a: bytearray(), b: bytearray()}  # bytes waiting to be written to that master
        other = {a: b, b: a}
        while not self._stop.is_set():
            wants = [fd for fd in (a, b) if pending[fd]]
            try:
                readable, writable, _ = select.select([a, b], wants, [], 0.05)
            except (OSError, ValueError):
                return
            for fd in readable:
                if len(pending[other[fd]]) > (1 << 20):
                    continue  # the far side is not reading: stop taking bytes, like a full cable
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    continue
                if self.corrupt is not None:
                    data = self.corrupt(data)
                pending[other[fd]] += data
            for fd in writable:
                try:
                    n = os.write(fd, pending[fd])
                except (BlockingIOError, OSError):
                    continue
                del pending[fd][:n]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in self._masters + self._slaves:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> VirtualSerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
