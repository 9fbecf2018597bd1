"""The Redis fast path: one command per admission, a few hundred bytes per identity, exact across clients.

A standalone server is reached through keylimit's own client (``keylimit.redis._client``), a
cluster through redis-py: every test here runs the same against both where both apply.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection

from keylimit import LimitStorageUnavailable
from keylimit.backends._redis_clients import RedisPy
from keylimit.backends.redis import RedisBackend, decode_state, state_key
from keylimit.redis._client import RespProtocol
from tests._redis import RedisCluster, RedisServer, free_port
from tests.backends.conftest import T0, WINDOW

pytestmark = pytest.mark.redis

ONE = (1, 0, 0)
PRO = (6000, 10_000_000, 1_000_000)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def servers(request: pytest.FixtureRequest) -> tuple[str, list[redis.Redis]]:
    """A clean standalone server or cluster: its URL and a client of each of its servers."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return url, [request.getfixturevalue("redis_server").client()]
    url = request.getfixturevalue("cluster_url")
    return url, [node.client() for node in request.getfixturevalue("redis_cluster").nodes]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """One entry per write the process makes to any Redis connection, redis-py's or keylimit's
    own: the name of the first command written (a pipeline is one write, one round trip)."""
    names: list[bytes] = []
    original = AbstractConnection.send_packed_command
    own_write = RespProtocol.write

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = b"".join(command) if isinstance(command, list) else command
        names.append(bytes(packed).split(b"\r\n")[2])
        await original(self, command, check_health)

    def counting_own(self: RespProtocol, data: bytes) -> None:
        names.append(data.split(b"\r\n")[2])
        own_write(self, data)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    monkeypatch.setattr(RespProtocol, "write", counting_own)
    return names


def executed(nodes: list[redis.Redis]) -> dict[str, int]:
    """Calls per command the servers executed since their last ``CONFIG RESETSTAT``, the
    commands the scripts call included (``INFO commandstats``)."""
    calls: dict[str, int] = {}
    for node in nodes:
        for name, stat in node.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + stat["calls"]
    return calls


def reset_stats(nodes: list[redis.Redis]) -> None:
    for node in nodes:
        node.config_resetstat()


async def test_admission_and_settlement_are_one_command_each(
    servers: tuple[str, list[redis.Redis]], sent: list[bytes]
) -> None:
    url, nodes = servers
    fast = RedisBackend.from_url(url, WINDOW)
    # Warm up: the client learns the cluster layout and the scripts get loaded.
    await fast.acquire("acct", PRO, ONE, ONE, T0)
    await fast.adjust("acct", (0, 5, 5), T0)
    sent.clear()
    reset_stats(nodes)

    for n in range(10):
        await fast.acquire("acct", PRO, (1, 100, 0), (1, 100, 1), T0 + n)
    assert sent == [b"EVALSHA"] * 10
    sent.clear()

    for n in range(5):
        await fast.adjust("acct", (0, -20, 40), T0 + n)
    assert sent == [b"EVALSHA"] * 5
    sent.clear()
    stats = executed(nodes)
    assert stats["evalsha"] == 15
    assert "script|load" not in stats

    await fast.peek("acct", PRO, T0)
    assert sent == [b"GET"]
    after = executed(nodes)
    assert after["evalsha"] == 15
    assert after["get"] == stats["get"] + 1
    await fast.aclose()


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
    usage = server.memory_usage(state_key("acct_pro"))
    assert usage is not None
    assert usage <= 1024
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
    assert state_key("{a}") == "kl:lim:{%7Ba%7D}"
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


async def test_a_thousand_concurrent_admissions_over_one_connection_admit_exactly_the_limit(
    redis_url: str, redis_server: RedisServer
) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    before = connections_received(redis_server)
    decisions = await asyncio.gather(
        *(backend.acquire("acct:busy", (100, 10**6, 10**6), ONE, ONE, T0) for _ in range(1000))
    )
    assert sum(d.allowed for d in decisions) == 100
    assert connections_received(redis_server) - before == 1 + 1  # ours, and the one asking
    await backend.aclose()


async def test_through_redis_py_more_concurrent_admissions_than_connections_wait_their_turn(redis_url: str) -> None:
    from keylimit.redis._url import MAX_CONNECTIONS, redis_client

    backend = RedisBackend(redis_client(redis_url), WINDOW, url=redis_url)
    n = 4 * MAX_CONNECTIONS + 50
    decisions = await asyncio.gather(
        *(backend.acquire("acct:busy", (100, 10**6, 10**6), ONE, ONE, T0) for _ in range(n))
    )
    assert sum(d.allowed for d in decisions) == 100
    await backend.aclose()


def connections_received(server: RedisServer) -> int:
    return int(server.client().info("stats")["total_connections_received"])


@pytest.fixture
def private() -> Iterator[RedisServer]:
    """A redis-server of the test's own, that it may pause, kill and start again."""
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    server.stop()


async def test_a_killed_server_fails_what_is_pending_and_a_restarted_one_is_used_again(private: RedisServer) -> None:
    backend = RedisBackend.from_url(private.url, WINDOW, timeout=60.0)  # only the kill can end the calls
    await backend.acquire("acct", PRO, ONE, ONE, T0)
    assert private.proc is not None
    private.proc.send_signal(signal.SIGSTOP)  # the admissions below stay unanswered ...
    pending = [asyncio.ensure_future(backend.acquire("acct", PRO, ONE, ONE, T0)) for _ in range(10)]
    await asyncio.sleep(0)  # ... once written
    private.proc.kill()
    private.proc.wait()
    private.proc = None
    for call in pending:
        with pytest.raises(LimitStorageUnavailable, match="ConnectionLost"):
            await call
    with pytest.raises(LimitStorageUnavailable, match="ConnectFailed: ConnectionRefusedError"):
        await backend.ping()

    private.start()  # empty: it kept nothing
    assert (await backend.acquire("acct", PRO, ONE, ONE, T0)).used == (0.0, 0.0, 0.0)
    await backend.aclose()


async def test_a_server_that_stops_answering_is_storage_unavailable_after_the_timeout(private: RedisServer) -> None:
    backend = RedisBackend.from_url(private.url, WINDOW, timeout=0.5)
    await backend.acquire("acct", PRO, ONE, ONE, T0)
    assert private.proc is not None
    private.proc.send_signal(signal.SIGSTOP)
    calls = [backend.acquire("acct", PRO, ONE, ONE, T0), backend.peek("acct", PRO, T0), backend.ping()]
    failures = await asyncio.gather(*calls, return_exceptions=True)
    assert [str(f) for f in failures] == [
        f"rate limit storage {private.url} unavailable (ReplyTimeout: no reply within 0.5s)"
    ] * 3
    private.proc.send_signal(signal.SIGCONT)
    assert (await backend.peek("acct", PRO, T0)).used[0] >= 1.0  # answering again, on a new connection
    await backend.aclose()


async def test_a_password_protected_server_and_a_database_from_the_url(
    private: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    private.client().config_set("requirepass", "s3cret-pw")
    right = RedisBackend.from_url(f"redis://:s3cret-pw@127.0.0.1:{private.port}/3", WINDOW)
    assert (await right.acquire("acct", PRO, ONE, ONE, T0)).allowed
    stored = decode_state(redis.Redis(port=private.port, password="s3cret-pw", db=3).get(state_key("acct")))
    assert stored is not None
    assert stored[1] == 1
    assert redis.Redis(port=private.port, password="s3cret-pw", db=0).exists(state_key("acct")) == 0

    wrong = RedisBackend.from_url(f"redis://:wr0ng-pw@127.0.0.1:{private.port}/3", WINDOW)
    with pytest.raises(LimitStorageUnavailable) as caught:
        await wrong.acquire("acct", PRO, ONE, ONE, T0)
    assert (
        str(caught.value)
        == f"rate limit storage redis://***@127.0.0.1:{private.port}/3 unavailable (ConnectFailed: WRONGPASS)"
    )
    texts = [repr(right), repr(wrong), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if "s3cret-pw" in t or "wr0ng-pw" in t]
    await right.aclose()
    await wrong.aclose()


async def test_a_url_with_options_only_redis_py_reads_goes_through_redis_py(redis_url: str, sent: list[bytes]) -> None:
    backend = RedisBackend.from_url(redis_url + "?health_check_interval=30", WINDOW)
    assert (await backend.acquire("acct", PRO, ONE, ONE, T0)).allowed
    assert isinstance(backend._redis, RedisPy)
    await backend.aclose()


async def test_admissions_cancelled_while_in_flight_leave_the_connection_in_step(private: RedisServer) -> None:
    backend = RedisBackend.from_url(private.url, WINDOW, timeout=60.0)
    await backend.acquire("acct", PRO, ONE, ONE, T0)
    assert private.proc is not None
    private.proc.send_signal(signal.SIGSTOP)
    calls = [asyncio.ensure_future(backend.acquire("acct", PRO, ONE, ONE, T0)) for _ in range(10)]
    await asyncio.sleep(0)  # all written
    for call in calls[::2]:
        call.cancel()
    private.proc.send_signal(signal.SIGCONT)
    answered = [await call for call in calls[1::2]]
    # Each caller got its own reply: the cancelled ones were written, so they count.
    assert [d.used[0] for d in answered] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert (await backend.peek("acct", PRO, T0)).used[0] == 11.0
    await backend.aclose()


async def test_a_state_key_holding_something_else_counts_as_no_state(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    client = redis.Redis.from_url(redis_url)
    client.set(state_key("junk"), b"not seven doubles")
    decision = await backend.acquire("junk", PRO, ONE, ONE, T0)
    assert decision.allowed
    assert decision.used == (0.0, 0.0, 0.0)
    stored = decode_state(client.get(state_key("junk")))
    assert stored is not None
    assert stored[1:4] == [1.0, 0.0, 0.0]
    await backend.aclose()


async def test_a_state_stored_before_debt_was_carried_reads_as_the_same_counts(redis_url: str) -> None:
    import struct

    backend = RedisBackend.from_url(redis_url, WINDOW)
    client = redis.Redis.from_url(redis_url)
    index = T0 // WINDOW
    client.set(state_key("old"), struct.pack("<7d", index, 4, 300, 20, 8, 500, 40), px=60_000)
    d = await backend.acquire("old", PRO, ONE, ONE, T0 + WINDOW / 2)
    assert d.used == (4 + 8 / 2, 300 + 500 / 2, 20 + 40 / 2)
    stored = decode_state(client.get(state_key("old")))
    assert stored is not None
    assert stored[1:10] == [5.0, 300.0, 20.0, 8.0, 500.0, 40.0, 0.0, 0.0, 0.0]
    assert len(client.get(state_key("old")) or b"") == 104
    await backend.aclose()


async def test_a_state_in_debt_lives_until_the_debt_is_paid(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, WINDOW)
    server = redis.Redis.from_url(redis_url)
    free = (60, 100_000, 10_000)
    two = 2 * WINDOW * 1000 + 1000
    await backend.acquire("acct", free, ONE, (1, 0, 1), T0)
    assert server.pttl(state_key("acct")) <= two
    await backend.adjust("acct", (0, 0, 50_000), T0 + 1)  # four windows of debt once this one ends
    assert two + 3 * WINDOW * 1000 < server.pttl(state_key("acct")) <= two + 4 * WINDOW * 1000
    # Entering window 2, two windows' worth is still owed.
    assert not (await backend.acquire("acct", free, ONE, (1, 0, 1), T0 + 2 * WINDOW)).allowed
    await backend.adjust("acct", (1, 0, 0), T0 + 2 * WINDOW)  # a write that enters the window
    assert two + WINDOW * 1000 < server.pttl(state_key("acct")) <= two + 2 * WINDOW * 1000
    await backend.aclose()
