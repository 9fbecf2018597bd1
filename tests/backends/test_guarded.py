"""The failure policy, against a real redis-server that the tests stop and start."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from keylimit import ConfigurationError, LimitStorageUnavailable, ManualClock
from keylimit.backends import Decision, Vector
from keylimit.backends.guarded import GuardedBackend
from keylimit.backends.memory import MemoryBackend
from keylimit.backends.redis import RedisBackend, decode_state, state_key
from tests._redis import RedisServer, free_port
from tests.backends.conftest import T0, WINDOW

pytestmark = pytest.mark.redis

ONE = (1, 0, 0)
LIMITS = (5, 1000, 1000)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def primary(server: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend.from_url(server.url, WINDOW)
    yield backend
    await backend.aclose()


def stored_requests(server: RedisServer, key: str = "acct") -> int:
    state = decode_state(server.client().get(state_key(key)))
    return 0 if state is None else int(state[1])


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "keylimit.limits" and r.levelno == logging.WARNING]


async def one(guarded: GuardedBackend, clock: ManualClock, key: str = "acct") -> Decision:
    return await guarded.acquire(key, LIMITS, ONE, ONE, clock())


async def test_fallback_counts_in_memory_and_returns_to_the_primary(
    server: RedisServer, primary: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keylimit.limits")
    clock = ManualClock(T0)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock)
    for _ in range(3):
        assert (await one(guarded, clock)).allowed
    assert stored_requests(server) == 3

    server.stop()
    decisions = [await one(guarded, clock) for _ in range(6)]
    # Per-process limits from zero: five fit, the sixth does not; no exception, one warning.
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert not any(d.unknown for d in decisions)
    assert guarded.degraded
    assert len(warnings(caplog)) == 1
    [warning] = warnings(caplog)
    assert f"redis://127.0.0.1:{server.port}/0" in warning
    assert warning.count("rate limit storage") == 1  # said once, not nested in itself

    server.start()
    clock.advance(1.0)
    await one(guarded, clock)  # answered at once from memory; starts the due probe
    await guarded.join_probe()
    assert not guarded.degraded
    assert "answers again" in caplog.records[-1].getMessage()

    assert (await one(guarded, clock)).allowed
    assert stored_requests(server) == 1  # the restarted server counts again
    assert len(warnings(caplog)) == 1


async def test_each_outage_is_logged_once(
    server: RedisServer, primary: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock)
    for outage in (1, 2):
        server.stop()
        for _ in range(4):
            await one(guarded, clock)
            await guarded.adjust("acct", (0, 10, 10), clock())
            await guarded.peek("acct", LIMITS, clock())
        assert len(warnings(caplog)) == outage
        server.start()
        clock.advance(1.0)
        await one(guarded, clock)
        await guarded.join_probe()
        assert not guarded.degraded


async def test_closed_refuses_while_storage_is_down(server: RedisServer, primary: RedisBackend) -> None:
    clock = ManualClock(T0)
    guarded = GuardedBackend(primary, policy="closed", clock=clock)
    assert (await one(guarded, clock)).allowed
    server.stop()
    for call in (
        guarded.acquire("acct", LIMITS, ONE, ONE, clock()),
        guarded.acquire("acct", LIMITS, ONE, ONE, clock()),
        guarded.adjust("acct", ONE, clock()),
        guarded.peek("acct", LIMITS, clock()),
        guarded.ping(),
    ):
        with pytest.raises(LimitStorageUnavailable):
            await call


async def test_open_admits_without_counting(server: RedisServer, primary: RedisBackend) -> None:
    clock = ManualClock(T0 + 15)
    guarded = GuardedBackend(primary, policy="open", clock=clock)
    server.stop()
    decisions = [await one(guarded, clock) for _ in range(10)]
    assert all(d.allowed and d.unknown for d in decisions)
    assert decisions[0].remaining == LIMITS
    assert decisions[0].reset_at == T0 + WINDOW
    await guarded.adjust("acct", ONE, clock())
    assert (await guarded.peek("acct", LIMITS, clock())).unknown
    await guarded.ping()


async def test_probes_back_off_from_one_to_thirty_seconds() -> None:
    later = RedisServer(port=free_port())  # not started yet: connections are refused
    primary = RedisBackend.from_url(later.url, WINDOW)
    clock = ManualClock(T0)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock)
    await one(guarded, clock)
    assert guarded.next_probe_at == T0 + 1

    due = []
    for _ in range(8):
        clock.set(guarded.next_probe_at - 0.5)  # not due yet: no probe
        await one(guarded, clock)
        await guarded.join_probe()
        assert guarded.next_probe_at is not None
        clock.set(guarded.next_probe_at)
        due.append(clock() - T0)
        await one(guarded, clock)
        await guarded.join_probe()
    assert due == [1, 3, 7, 15, 31, 61, 91, 121]
    assert guarded.next_probe_at == T0 + 151

    later.start()
    try:
        clock.set(T0 + 151)
        assert (await one(guarded, clock)).allowed
        # This request was answered from memory, without waiting for the probe it started.
        assert guarded.degraded
        assert stored_requests(later) == 0
        await guarded.join_probe()
        assert not guarded.degraded
        assert guarded.next_probe_at is None
        await one(guarded, clock)
        assert stored_requests(later) == 1
    finally:
        await guarded.aclose()
        later.stop()


class Broken:
    """A backend with a bug: anything but LimitStorageUnavailable must not escape either."""

    window = WINDOW

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        raise RuntimeError("bug")

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        raise RuntimeError("bug")

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        raise RuntimeError("bug")

    async def ping(self) -> None:
        raise RuntimeError("bug")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("policy", ["fallback", "open"])
async def test_no_other_exception_escapes(policy: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    guarded = GuardedBackend(Broken(), policy=policy, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):
        assert (await one(guarded, clock)).allowed
        await guarded.adjust("acct", ONE, clock())
        clock.advance(5)
        await guarded.join_probe()
    assert len(warnings(caplog)) == 1
    assert "RuntimeError" in warnings(caplog)[0]


async def test_closed_turns_any_failure_into_storage_unavailable() -> None:
    guarded = GuardedBackend(Broken(), policy="closed", clock=ManualClock(T0))  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(LimitStorageUnavailable):
            await guarded.acquire("acct", LIMITS, ONE, ONE, T0)


def test_an_unknown_policy_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="KEYLIMIT_FAILURE_POLICY"):
        GuardedBackend(MemoryBackend(WINDOW), policy="maybe")  # type: ignore[arg-type]
