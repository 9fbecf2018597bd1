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
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ._protocol import (
    ConnectFailed,
    ConnectionLost,
    ProtocolViolation,
    Reply,
    ReplyError,
    ReplyTimeout,
    RespFailure,
    RespProtocol,
    pack,
    parse,
)

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "ProtocolViolation",
    "Reply",
    "ReplyError",
    "ReplyTimeout",
    "RespClient",
    "RespFailure",
    "RespProtocol",
    "Target",
    "pack",
    "parse",
]


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
