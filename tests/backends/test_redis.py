"""The Redis fast path: one command per admission, a few hundred bytes per identity, exact across clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection

from keylimit import LimitStorageUnavailable
from keylimit.backends.redis import RedisBackend, state_key
from tests._redis import RedisCluster, free_port
from tests.backends.conftest import T0, WINDOW

pytestmark = pytest.mark.redis

ONE = (1, 0, 0)
PRO = (6000, 10_000_000, 1_000_000)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def fast(request: pytest.FixtureRequest) -> AsyncIterator[RedisBackend]:
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    backend = RedisBackend.from_url(url, WINDOW)
    yield backend
    await backend.aclose()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The name of every command the process writes to any Redis connection."""
    names: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = b"".join(command) if isinstance(command, list) else command
        names.append(bytes(packed).split(b"\r\n")[2])
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return names


async def test_admission_and_settlement_are_one_command_each(fast: RedisBackend, sent: list[bytes]) -> None:
    # Warm up: the client learns the cluster layout and the scripts get loaded.
    await fast.acquire("acct", PRO, ONE, ONE, T0)
    await fast.adjust("acct", (0, 5, 5), T0)
    sent.clear()

    for n in range(10):
        await fast.acquire("acct", PRO, (1, 100, 0), (1, 100, 1), T0 + n)
    assert sent == [b"EVALSHA"] * 10
    sent.clear()

    for n in range(5):
        await fast.adjust("acct", (0, -20, 40), T0 + n)
    assert sent == [b"EVALSHA"] * 5
    sent.clear()

    await fast.peek("acct", PRO, T0)
    assert sent == [b"HMGET"]


async def test_scripts_flushed_from_the_server_are_loaded_again(redis_url: str, sent: list[bytes]) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    await backend.acquire("acct", PRO, ONE, ONE, T0)
    redis.Redis.from_url(redis_url).script_flush()
    sent.clear()

    assert (await backend.acquire("acct", PRO, ONE, ONE, T0)).used == (1.0, 0.0, 0.0)
    assert sent == [b"EVALSHA", b"SCRIPT", b"EVALSHA"]
    sent.clear()
    await backend.acquire("acct", PRO, ONE, ONE, T0)
    assert sent == [b"EVALSHA"]
    await backend.aclose()


async def test_an_identity_costs_a_few_hundred_bytes(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    server = redis.Redis.from_url(redis_url)
    await backend.acquire("warm-up", PRO, ONE, ONE, T0)
    server.info("memory")  # this client's first command allocates its own buffers
    before = server.info("memory")["used_memory"]

    for n in range(200):  # 2,000,000 prompt tokens over two windows
        d = await backend.acquire("acct_pro", PRO, (1, 10_000, 500), (1, 10_000, 1), T0 + n * 0.6)
        assert d.allowed

    assert server.info("memory")["used_memory"] - before < 16 * 1024
    assert server.memory_usage(state_key("acct_pro")) <= 1024
    assert server.pttl(state_key("acct_pro")) <= 2 * WINDOW * 1000 + 1000
    await backend.aclose()


async def test_two_clients_admit_exactly_the_limit_together(redis_url: str) -> None:
    first = RedisBackend.from_url(redis_url, WINDOW)
    second = RedisBackend.from_url(redis_url, WINDOW)
    limits = (60, 1000, 1000)
    calls = [(first if n % 2 else second).acquire("acct", limits, ONE, ONE, T0 + 3) for n in range(150)]
    decisions = await asyncio.gather(*calls)
    assert sum(d.allowed for d in decisions) == 60
    await first.aclose()
    await second.aclose()


async def test_one_hash_per_identity_in_one_cluster_slot(cluster_url: str, redis_cluster: RedisCluster) -> None:
    backend = RedisBackend.from_url(cluster_url, WINDOW)
    for key in ("{a}", "b}", "2001:db8::1"):
        await backend.acquire(key, PRO, ONE, ONE, T0)
    keys = sorted(k for node in redis_cluster.nodes for k in node.client().keys("*"))
    assert keys == sorted(state_key(k).encode() for k in ("{a}", "b}", "2001:db8::1"))
    assert state_key("{a}") == "kl:rl:{%7Ba%7D}"
    await backend.aclose()


async def test_an_unreachable_server_is_storage_unavailable_without_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    backend = RedisBackend.from_url(url, WINDOW)
    assert "s3cret-pw" not in repr(backend)
    for call in (
        backend.acquire("acct", PRO, ONE, ONE, T0),
        backend.adjust("acct", ONE, T0),
        backend.peek("acct", PRO, T0),
        backend.ping(),
    ):
        with pytest.raises(LimitStorageUnavailable) as caught:
            await call
        assert "s3cret-pw" not in str(caught.value)
        assert "127.0.0.1" in str(caught.value)
    await backend.aclose()


async def test_the_state_expires_two_windows_after_it_enters_a_window(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    server = redis.Redis.from_url(redis_url)
    ttl = 2 * WINDOW * 1000 + 1000
    await backend.adjust("settled-first", (0, 0, 7), T0)  # a settlement can be the first write
    assert 0 < server.pttl(state_key("settled-first")) <= ttl

    await backend.acquire("acct", PRO, ONE, ONE, T0)
    server.pexpire(state_key("acct"), 5000)
    await backend.acquire("acct", PRO, ONE, ONE, T0 + WINDOW / 2)  # same window: its expiry stands
    assert 0 < server.pttl(state_key("acct")) <= 5000
    assert (await backend.acquire("acct", PRO, ONE, ONE, T0 + WINDOW)).used == (2.0, 0.0, 0.0)
    assert 5000 < server.pttl(state_key("acct")) <= ttl  # a new window: two more
    await backend.aclose()


async def test_a_settlement_beyond_any_double_counts_as_the_most_there_can_be(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    await backend.adjust("acct", (0, 10**400, 0), T0)
    refused = await backend.acquire("acct", PRO, ONE, (1, 1, 0), T0)
    assert not refused.allowed
    assert refused.exceeded == 1
    await backend.adjust("acct", (0, -(10**400), 0), T0)  # and a count never goes below zero
    assert (await backend.acquire("acct", PRO, ONE, (1, 1, 0), T0)).used == (0.0, 0.0, 0.0)
    await backend.aclose()


async def test_a_client_that_decodes_responses_is_refused_at_once(redis_url: str) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="must not decode responses"):
        RedisBackend(client, WINDOW)
    await client.aclose()


async def test_more_concurrent_admissions_than_connections_wait_their_turn(redis_url: str) -> None:
    from keylimit._redis import MAX_CONNECTIONS

    backend = RedisBackend.from_url(redis_url, WINDOW)
    n = 4 * MAX_CONNECTIONS + 50
    decisions = await asyncio.gather(
        *(backend.acquire("acct:busy", (100, 10**6, 10**6), ONE, ONE, T0) for _ in range(n))
    )
    assert sum(d.allowed for d in decisions) == 100
    await backend.aclose()
