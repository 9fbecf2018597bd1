"""A small pipelined RESP2 client for one standalone Redis server: the limit backend's hot path.

Every caller shares ONE connection: a command is written at once and its reply resolves a
future in FIFO order, parsed in ``data_received``. That saves what redis-py spends per
command (a pool, a timeout context per read, its parser), about a third of a round trip.

There is no timeout per call: each pending reply keeps its send time and one loop timer
watches the oldest; once that is ``timeout`` seconds old the connection is declared dead,
aborted, and every pending call fails. A lost connection fails every pending call too; the
next call connects again (one attempt shared by every caller, bounded by ``timeout``).

Every failure is a ``RespFailure`` whose text is a class or an error code only, never a
command, a key or a password. The connection belongs to the event loop that opened it: use
a client from that loop only (after ``aclose()`` it may open one on another).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import unquote, urlsplit

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


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what to send first (AUTH, SELECT); the password stays out of the repr."""

    host: str
    port: int
    tls: bool
    db: int
    handshake: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def from_url(cls, url: str) -> Target | None:
        """The target of a ``redis://`` or ``rediss://`` URL; None if it says more than this client
        understands (query parameters such as ``ssl_cert_reqs``), for redis-py to handle."""
        try:
            parts = urlsplit(url)
            port = parts.port or 6379
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        path = parts.path.strip("/") or "0"
        if scheme not in ("redis", "rediss") or parts.query or parts.fragment or not path.isdigit():
            return None
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
        handshake: list[bytes] = []
        if username:  # as redis-py: a username sends AUTH with both, a password alone AUTH with it
            handshake.append(pack("AUTH", username, password))
        elif password:
            handshake.append(pack("AUTH", password))
        if int(path):
            handshake.append(pack("SELECT", int(path)))
        return cls(parts.hostname or "localhost", port, scheme == "rediss", int(path), tuple(handshake))


class RespClient:
    """Every caller over one pipelined connection to ``target``, opened on first use."""

    __slots__ = ("_conn", "_connecting", "target", "timeout")

    def __init__(self, target: Target, *, timeout: float = 2.0) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.target = target
        self.timeout = float(timeout)
        self._conn: RespProtocol | None = None
        self._connecting: asyncio.Task[RespProtocol] | None = None

    def __repr__(self) -> str:
        return f"RespClient({self.target!r}, timeout={self.timeout!r})"

    async def execute(self, command: bytes) -> Reply:
        """One packed command's reply; an error reply raises ``ReplyError``."""
        conn = self._conn
        if conn is None or conn.dead:
            conn = await self._connect()
        reply: Reply = await conn.send(command)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def execute_many(self, commands: list[bytes]) -> list[Reply]:
        """The replies to ``commands``, written together (one round trip); error replies are values."""
        if not commands:
            return []
        conn = self._conn
        if conn is None or conn.dead:
            conn = await self._connect()
        replies: list[Reply] = await conn.send(b"".join(commands), len(commands))
        return replies

    async def _connect(self) -> RespProtocol:
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise ConnectFailed("closed") from None  # aclose() ended the attempt, not our caller
            raise

    def _opened(self, task: asyncio.Task[RespProtocol]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have been cancelled

    async def _open(self) -> RespProtocol:
        loop = asyncio.get_running_loop()
        target = self.target
        conn: RespProtocol | None = None
        done = False
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: RespProtocol(loop, self.timeout),
                    target.host,
                    target.port,
                    ssl=ssl.create_default_context() if target.tls else None,
                )
                if conn.dead:
                    raise ConnectionLost("closed by the server")
                if target.handshake:
                    for reply in await conn.send(b"".join(target.handshake), len(target.handshake)):
                        if isinstance(reply, ReplyError):
                            raise reply
            done = True
        except (OSError, TimeoutError, RespFailure) as exc:
            reason = exc.reason if isinstance(exc, RespFailure) else type(exc).__name__
            raise ConnectFailed(reason) from None
        finally:
            if conn is not None and not done:  # failed or cancelled: drop the half-open connection
                conn._die(ConnectionLost, "not opened")
        self._conn = conn
        return conn

    @property
    def writes(self) -> int:
        """Writes on the current connection (each one round trip)."""
        return 0 if self._conn is None else self._conn.writes

    async def aclose(self) -> None:
        """Drops the connection (pending calls fail) and waits until it is closed."""
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RespFailure):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._die(ConnectionLost, "closed")
            await conn.closed
