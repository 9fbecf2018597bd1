"""Settlements off the request path: ``settle`` never waits, and shared backends batch it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keylimit import ManualClock
from keylimit.backends import LimitBackend
from keylimit.backends.guarded import GuardedBackend
from keylimit.backends.memory import MemoryBackend
from keylimit.backends.redis import RedisBackend
from keylimit.redis._url import redis_client
from tests._redis import RedisServer
from tests.backends.conftest import T0, WINDOW
from tests.backends.test_redis import sent  # noqa: F401 (fixture)

LIMITS = (100, 10_000, 10_000)
NOTHING = (0, 0, 0)


async def test_settle_lands_like_adjust(backend: LimitBackend) -> None:
    await backend.acquire("a", LIMITS, (1, 100, 0), (1, 100, 1), T0)
    backend.settle("a", (0, -40, 25), T0 + 1)
    backend.settle("a", (0, 10, 5), T0 + 2)
    await backend.flush()
    standing = await backend.peek("a", LIMITS, T0 + 3)
    assert standing.remaining == (99, 10_000 - 70, 10_000 - 30)


def test_memory_settles_at_once_without_a_loop() -> None:
    memory = MemoryBackend(WINDOW)
    memory.settle("a", (0, 3, 4), T0)
    assert len(memory) == 1


def redis_backend(url: str, client: str, *, timeout: float = 2.0) -> RedisBackend:
    """keylimit's own client (what ``from_url`` picks for a standalone server), or redis-py's."""
    if client == "own":
        return RedisBackend.from_url(url, WINDOW, timeout=timeout)
    return RedisBackend(redis_client(url, timeout=timeout), WINDOW, url=url)


CLIENTS = ["own", "redis-py"]


@pytest.mark.redis
@pytest.mark.parametrize("client", CLIENTS)
async def test_many_settlements_are_one_round_trip(redis_url: str, client: str, sent: list[bytes]) -> None:  # noqa: F811
    fast = redis_backend(redis_url, client)
    await fast.acquire("warm", LIMITS, (1, 0, 0), (1, 0, 0), T0)
    await fast.adjust("warm", (0, 1, 1), T0)  # the server has the settlement script
    sent.clear()
    for n in range(50):
        fast.settle(f"acct-{n % 10}", (0, 1, 2), T0)
    assert sent == []  # nothing was waited for
    await fast.flush()
    assert sent == [b"EVALSHA"]  # one pipeline: one write (of ten scripts), one round trip
    for n in range(10):
        standing = await fast.peek(f"acct-{n}", LIMITS, T0)
        assert standing.used[1:] == (5.0, 10.0)
    await fast.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_batch_reloads_scripts_the_server_lost(redis_url: str, redis_server: RedisServer, client: str) -> None:
    fast = redis_backend(redis_url, client)
    await fast.acquire("a", LIMITS, (1, 0, 0), (1, 0, 0), T0)
    redis_server.client().script_flush()
    fast.settle("a", (0, 5, 5), T0)
    fast.settle("b", (0, 0, 3), T0)
    await fast.flush()
    assert (await fast.peek("a", LIMITS, T0)).used == (1.0, 5.0, 5.0)
    assert (await fast.peek("b", LIMITS, T0)).used == (0.0, 0.0, 3.0)
    await fast.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_failed_batch_is_logged_once_and_dropped(client: str, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer().start()
    fast = redis_backend(server.url, client, timeout=1.0)
    await fast.acquire("a", LIMITS, (1, 0, 0), (1, 0, 0), T0)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="keylimit.limits"):
        for _ in range(3):
            fast.settle("a", (0, 1, 1), T0)
            await fast.flush()
    failures = [r for r in caplog.records if "settlements" in r.getMessage()]
    assert len(failures) == 1
    assert len(fast._batch) == 0
    await fast.aclose()


@pytest.mark.redis
async def test_guarded_settles_in_the_fallback_while_the_primary_is_down() -> None:
    server = RedisServer().start()
    clock = ManualClock(T0)
    guarded = GuardedBackend(RedisBackend.from_url(server.url, WINDOW, timeout=1.0), clock=clock)
    server.stop()
    decision = await guarded.acquire("a", LIMITS, (1, 0, 0), (1, 0, 0), T0)
    assert guarded.degraded
    assert decision.allowed
    guarded.settle("a", (0, 0, 7), T0)
    assert (await guarded.peek("a", LIMITS, T0)).remaining[2] == 10_000 - 7
    guarded.settle("b", NOTHING, T0)
    await guarded.aclose()


async def test_flush_waits_for_the_write_in_flight() -> None:
    from keylimit.backends._batch import SettlementBatch

    landed: list[dict[str, tuple[int, int, int]]] = []
    release = asyncio.Event()

    async def slow_write(batch: dict[str, tuple[int, int, int]], now: float) -> None:
        await release.wait()
        landed.append(batch)

    batch = SettlementBatch(slow_write, interval=0.0)
    batch.add("a", (0, 1, 1), T0)
    await asyncio.sleep(0)  # the background task takes the batch and starts writing
    flushing = asyncio.ensure_future(batch.flush())
    await asyncio.sleep(0)
    assert not flushing.done()  # still waiting for the write in flight
    release.set()
    await flushing
    assert landed == [{"a": (0, 1, 1)}]
    await batch.aclose()
