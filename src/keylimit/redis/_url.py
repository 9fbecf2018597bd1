"""Redis clients from URLs (``redis://``, ``rediss://``, ``redis+cluster://``), loaded lazily."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

REDIS_SCHEMES = ("redis", "rediss", "redis+cluster")
MAX_CONNECTIONS = 64
"""Connections per process to one standalone Redis; more commands in flight wait for one."""


def redact_url(url: str) -> str:
    """``url`` without its password, for logs, reprs and error messages."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "redis+cluster"


def redis_client(url: str, *, timeout: float = 2.0, setting: str = "KEYLIMIT_KEYS_URL") -> Redis | RedisCluster:
    """An asyncio client for ``url``; a ``RedisCluster`` for ``redis+cluster://``."""
    try:
        import redis.asyncio as aredis
        from redis.asyncio.cluster import RedisCluster
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(f"{setting}: Redis needs the extra: pip install 'keylimit[redis]'") from exc
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise ConfigurationError(f"{setting}: not a Redis URL: {redact_url(url)}")
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if scheme == "redis+cluster":
        plain = urlunsplit(("redis", parts.netloc, parts.path, parts.query, ""))
        return RedisCluster.from_url(plain, **options)
    # redis-py's default pool raises once 100 commands are in flight, which a busy server
    # reaches: that would count as an outage. A blocking pool makes the extra ones wait.
    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=timeout, **options)
    return aredis.Redis.from_pool(pool)


class ClusterGate:
    """Initialises a Redis Cluster client once, before its first command.

    redis-py's asyncio cluster client, while cold, can fail commands issued concurrently as
    it learns the slot layout (``AttributeError`` deep inside it); one ``initialize()``
    under a lock first avoids that. For a plain client it is open from the start.
    """

    __slots__ = ("_client", "_lock", "ready")

    def __init__(self, client: Redis | RedisCluster) -> None:
        from redis.asyncio.cluster import RedisCluster

        self._client = client
        self.ready = not isinstance(client, RedisCluster)
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            if not self.ready:
                await self._client.initialize()
                self.ready = True
