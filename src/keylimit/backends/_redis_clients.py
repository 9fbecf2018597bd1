"""The limit backend's two ways to Redis, behind one small interface (``Commands``):
keylimit's own pipelined client (``keylimit.redis._client``) for a standalone server, and a
redis-py client for a cluster or whatever else ``RedisBackend`` is given.

Keys are Redis key names; scripts go by their SHA1 and are loaded again (``SCRIPT LOAD``)
when the server answers ``NOSCRIPT``.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any, Protocol

from ..redis._client import ProtocolViolation, ReplyError, RespClient, RespFailure, pack
from ..redis._url import ClusterGate

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript


class Script:
    """A script by its SHA1, with its ``EVALSHA`` on one key packed up to the key."""

    __slots__ = ("head", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.head = b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % self.sha.encode()

    def command(self, key: str, arg: bytes) -> bytes:
        name = key.encode()
        return b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n" % (self.head, len(name), name, len(arg), arg)


class Commands(Protocol):
    """What the backend asks of Redis, through one client or the other."""

    errors: tuple[type[BaseException], ...]

    async def run(self, script: Script, key: str, arg: bytes) -> Any: ...

    async def run_many(self, script: Script, args: dict[str, bytes]) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class OwnClient:
    """Through ``RespClient``: each command one write; a batch one write of all its commands."""

    __slots__ = ("_client",)
    errors: tuple[type[BaseException], ...] = (RespFailure,)

    def __init__(self, client: RespClient) -> None:
        self._client = client

    async def run(self, script: Script, key: str, arg: bytes) -> Any:
        command = script.command(key, arg)
        try:
            return await self._client.execute(command)
        except ReplyError as exc:
            if exc.reason != "NOSCRIPT":
                raise
        await self._client.execute(pack("SCRIPT", "LOAD", script.source))  # the server lost it
        return await self._client.execute(command)

    async def run_many(self, script: Script, args: dict[str, bytes]) -> None:
        commands = [script.command(key, arg) for key, arg in args.items()]
        replies = await self._client.execute_many(commands)
        errors = [r for r in replies if isinstance(r, ReplyError)]
        lost = [
            c for c, r in zip(commands, replies, strict=True) if isinstance(r, ReplyError) and r.reason == "NOSCRIPT"
        ]
        if lost:  # the server lost the script: those did not run; load it and send them again
            await self._client.execute(pack("SCRIPT", "LOAD", script.source))
            errors = [r for r in errors if r.reason != "NOSCRIPT"]
            errors += [r for r in await self._client.execute_many(lost) if isinstance(r, ReplyError)]
        if errors:
            raise errors[0]

    async def get(self, key: str) -> bytes | None:
        reply = await self._client.execute(pack("GET", key))
        if reply is not None and not isinstance(reply, bytes):
            raise ProtocolViolation("GET")
        return reply

    async def ping(self) -> None:
        await self._client.execute(b"*1\r\n$4\r\nPING\r\n")

    async def aclose(self) -> None:
        await self._client.aclose()


class RedisPy:
    """Through a redis-py client, standalone or cluster."""

    __slots__ = ("_client", "_cluster", "_gate", "_scripts", "errors")

    def __init__(self, client: Redis | RedisCluster) -> None:
        from redis.asyncio.cluster import RedisCluster as _Cluster
        from redis.exceptions import RedisClusterException, RedisError

        if client.get_encoder().decode_responses:
            raise ValueError("the Redis client must not decode responses (the scripts answer in bytes)")
        self._client = client
        self._scripts: dict[str, AsyncScript] = {}
        self._cluster = isinstance(client, _Cluster)
        self._gate = ClusterGate(client)
        self.errors: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

    async def run(self, script: Script, key: str, arg: bytes) -> Any:
        if not self._gate.ready:
            await self._gate.wait()
        registered = self._scripts.get(script.sha)
        if registered is None:
            registered = self._scripts[script.sha] = self._client.register_script(script.source)
        return await registered(keys=[key], args=(arg,))

    async def run_many(self, script: Script, args: dict[str, bytes]) -> None:
        """A pipeline; on a cluster, whose pipelines refuse scripts, all commands in flight at once."""
        if not self._gate.ready:
            await self._gate.wait()
        if self._cluster:
            await asyncio.gather(*(self.run(script, key, arg) for key, arg in args.items()))
            return
        from redis.exceptions import NoScriptError

        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for key, arg in args.items():
                pipe.evalsha(script.sha, 1, key, arg)
            try:
                await pipe.execute()
                return
            except NoScriptError:  # the server lost its scripts: nothing ran; load and again
                if attempt == 2:
                    raise
                await self._client.script_load(script.source)

    async def get(self, key: str) -> bytes | None:
        if not self._gate.ready:
            await self._gate.wait()
        reply = await self._client.get(key)
        if isinstance(reply, str):  # pragma: no cover - clients that decode are refused up front
            raise ProtocolViolation("GET")
        return reply

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()
