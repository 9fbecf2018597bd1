"""RESP2 on one connection: errors, command packing, the reply parser and the asyncio
``Protocol`` that matches replies to waiting callers in FIFO order (``_client`` drives it).

Every failure is a ``RespFailure`` whose text is a class or an error code only, never a
command, a key or a password.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
from typing import Any, Union

Reply = Union[bytes, int, None, "ReplyError", list["Reply"]]
"""Simple and bulk strings are bytes, a null is None, an error inside an array a ``ReplyError``."""


class RespFailure(Exception):
    """Anything that went wrong talking to Redis. ``reason`` is an error code or a class name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplyError(RespFailure):
    """The server answered an error; ``reason`` is its code (``NOSCRIPT``, ``WRONGPASS``, ``ERR``)."""

    @classmethod
    def from_line(cls, line: bytes) -> ReplyError:
        code = line.split(b" ", 1)[0][:32].decode("ascii", "replace")
        return cls(code if _CODE.fullmatch(code) else "ERR")


_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


class ConnectFailed(RespFailure):
    """No connection: refused, unreachable, timed out, or refused at AUTH or SELECT."""


class ConnectionLost(RespFailure):
    """The connection closed or broke with replies pending."""


class ReplyTimeout(RespFailure):
    """A reply took longer than the timeout: the connection was dropped."""


class ProtocolViolation(RespFailure):
    """The server sent something that is not RESP2, or a reply nobody asked for."""


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


def parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    """The reply that starts at ``pos`` and the position after it; -1 if ``buf`` holds only part."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None, -1
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None, -1
        if buf[stop : stop + 2] != b"\r\n":
            raise ProtocolViolation("bulk string")
        return buf[end + 2 : stop], stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return ReplyError.from_line(buf[pos + 1 : end]), end + 2
    if kind == 42:  # * array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Reply] = []
        at = end + 2
        for _ in range(count):
            item, at = parse(buf, at)
            if at < 0:
                return None, -1
            items.append(item)
        return items, at
    raise ProtocolViolation("reply type")


class RespProtocol(asyncio.Protocol):
    """One connection. ``send`` writes at once and returns the future of the reply, or of a
    list of ``count`` replies if ``count`` is given. Error replies are results (``ReplyError``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], int, float]] = collections.deque()
        self._gathered: list[Reply] = []
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.dead = False
        self.writes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A peer gone without a word (a dropped NAT entry) is noticed while idle too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)  # type: ignore[union-attr]

    def send(self, data: bytes, count: int = 0) -> asyncio.Future[Any]:
        loop = self._loop
        future = loop.create_future()
        now = loop.time()
        self._pending.append((future, count, now))
        if self._timer is None:
            self._timer = loop.call_at(now + self._timeout, self._check_oldest)
        self.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
        pos, size = 0, len(data)
        pending = self._pending
        try:
            while pos < size:
                value, end = parse(data, pos)
                if end < 0:
                    break
                pos = end
                future, count, _ = pending[0]
                if not count:
                    pending.popleft()
                    if not future.done():
                        future.set_result(value)
                else:
                    gathered = self._gathered
                    gathered.append(value)
                    if len(gathered) == count:
                        pending.popleft()
                        self._gathered = []
                        if not future.done():
                            future.set_result(gathered)
        except (ValueError, IndexError, ProtocolViolation):  # IndexError: a reply nobody waits for
            self._die(ProtocolViolation, "unexpected data")
            return
        self._buf = data[pos:] if pos < size else b""

    def _check_oldest(self) -> None:
        self._timer = None
        if not self._pending:
            return
        sent = self._pending[0][2]
        if self._loop.time() - sent >= self._timeout:
            self._die(ReplyTimeout, f"no reply within {self._timeout:g}s")
        else:
            self._timer = self._loop.call_at(sent + self._timeout, self._check_oldest)

    def _die(self, failure: type[RespFailure], reason: str, *, lost: bool = False) -> None:
        """Fails every pending call and drops the connection (already gone if ``lost``)."""
        self.dead = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, collections.deque()
        self._gathered = []
        for future, _, _ in pending:
            if not future.done():
                future.set_exception(failure(reason))
        if self._transport is not None and not lost:
            self._transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._die(ConnectionLost, "closed by the server" if exc is None else type(exc).__name__, lost=True)
        if not self.closed.done():
            self.closed.set_result(None)
