"""The failure policy, against a real redis-server that the tests stop and start.

The probe waits through an injected ``sleep`` (``tests._sleep.ManualSleep``) that the
tests end when they choose, moving the manual clock by what it asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from keylimit import ConfigurationError, LimitStorageUnavailable, ManualClock, _diagnostics
from keylimit.backends import Decision, Vector
from keylimit.backends.guarded import GuardedBackend
from keylimit.backends.memory import MemoryBackend
from keylimit.backends.redis import RedisBackend, decode_state, state_key
from tests._redis import RedisServer, free_port
from tests._sleep import ManualSleep
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
    sleep = ManualSleep(clock)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock, sleep=sleep)
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
    await sleep.wake()  # one second later, with no request in between
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
    sleep = ManualSleep(clock)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock, sleep=sleep)
    for outage in (1, 2):
        server.stop()
        for _ in range(4):
            await one(guarded, clock)
            await guarded.adjust("acct", (0, 10, 10), clock())
            await guarded.peek("acct", LIMITS, clock())
        assert len(warnings(caplog)) == outage
        server.start()
        await sleep.wake()
        await guarded.join_probe()
        assert not guarded.degraded
    assert sleep.asked == [1.0, 1.0]  # each outage starts again from one second


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


async def test_probes_back_off_from_one_to_thirty_seconds_without_requests() -> None:
    later = RedisServer(port=free_port())  # not started yet: connections are refused
    primary = RedisBackend.from_url(later.url, WINDOW)
    clock = ManualClock(T0)
    sleep = ManualSleep(clock)
    guarded = GuardedBackend(primary, policy="fallback", clock=clock, sleep=sleep)
    await one(guarded, clock)  # the only request: it meets the failure and is answered from memory
    assert guarded.degraded

    due = []
    for _ in range(8):
        await sleep.until_asleep()
        assert guarded.next_probe_at == clock() + sleep.asked[-1]
        await sleep.wake()
        due.append(clock() - T0)
    assert sleep.asked == [1, 2, 4, 8, 16, 30, 30, 30]
    assert due == [1, 3, 7, 15, 31, 61, 91, 121]  # each one a refused probe
    await sleep.until_asleep()
    assert guarded.degraded
    assert guarded.next_probe_at == T0 + 151

    later.start()
    try:
        assert stored_requests(later) == 0
        await sleep.wake()  # 30 s later; still no request
        await guarded.join_probe()
        assert not guarded.degraded
        assert guarded.next_probe_at is None
        assert not sleep.sleeping  # the probing ended when the storage answered
        await one(guarded, clock)
        assert stored_requests(later) == 1
    finally:
        await guarded.aclose()
        later.stop()


async def test_aclose_ends_the_probing() -> None:
    down = RedisServer(port=free_port())  # never started
    clock = ManualClock(T0)
    sleep = ManualSleep(clock)
    guarded = GuardedBackend(RedisBackend.from_url(down.url, WINDOW), clock=clock, sleep=sleep)
    await one(guarded, clock)
    await sleep.wake()
    await sleep.until_asleep()  # backing off: 2 s
    await guarded.aclose()
    assert sleep.cancelled == 1
    assert not sleep.sleeping
    await guarded.join_probe()  # returns at once: nothing probes any more
    for _ in range(3):
        await asyncio.sleep(0)
    assert sleep.asked == [1, 2]


async def test_two_processes_count_a_burst_in_redis_once_it_answers(server: RedisServer) -> None:
    """The two processes were idle while Redis came back: their probes alone bring them back
    to the shared counters, so a burst across both is admitted once on the shared plan."""
    clock = ManualClock(T0)
    plan = (60, 10**6, 10**6)
    sleeps = [ManualSleep(), ManualSleep()]
    processes = [
        GuardedBackend(RedisBackend.from_url(server.url, WINDOW, timeout=1.0), clock=clock, sleep=sleep)
        for sleep in sleeps
    ]
    try:
        server.stop()
        for process in processes:
            assert (await process.acquire("acct", plan, ONE, ONE, clock())).allowed  # counted in memory
            assert process.degraded
        server.start()  # the same port, empty
        clock.advance(35)
        for sleep in sleeps:
            await sleep.wake()
        for process in processes:
            await process.join_probe()
            assert not process.degraded

        burst = [processes[i % 2].acquire("acct", plan, ONE, ONE, clock()) for i in range(150)]
        decisions = await asyncio.gather(*burst)
        assert sum(d.allowed for d in decisions) == 60
        assert stored_requests(server) == 60
    finally:
        for process in processes:
            await process.aclose()


def test_the_probe_runs_on_whichever_loop_meets_the_failure() -> None:
    """Built with no loop running (at import or configuration time), used on one loop that
    ends while the storage is down, then on another: the probing starts again there."""
    down = RedisServer(port=free_port())
    clock = ManualClock(T0)
    guarded = GuardedBackend(RedisBackend.from_url(down.url, WINDOW), clock=clock, sleep=ManualSleep(clock))

    async def first() -> None:
        await one(guarded, clock)
        assert isinstance(guarded.sleep, ManualSleep)
        await guarded.sleep.until_asleep()

    async def second() -> None:
        assert isinstance(guarded.sleep, ManualSleep)
        assert guarded.degraded
        await one(guarded, clock)  # the first loop's probe ended with it: this request starts one here
        await guarded.sleep.wake()
        await guarded.join_probe()
        assert not guarded.degraded
        await one(guarded, clock)
        await guarded.aclose()

    asyncio.run(first())
    down.start()
    try:
        asyncio.run(second())
        assert stored_requests(down) == 1
    finally:
        down.stop()


class Broken:
    """A backend with a bug: it raises what no storage failure raises."""

    window = WINDOW

    def __repr__(self) -> str:
        return "Broken()"

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        raise TypeError("unsupported operand type(s) for +: 'float' and 'NoneType'")

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        raise TypeError("adjust")

    def settle(self, key: str, delta: Vector, now: float) -> None:
        raise TypeError("settle")

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        raise TypeError("peek")

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.fixture(autouse=True)
def fresh_bug_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs are logged once per process and place; each test starts with none logged."""
    monkeypatch.setattr(_diagnostics, "_reported", set())


def bugs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "bug")]


@pytest.mark.parametrize(("policy", "unknown"), [("fallback", False), ("open", True)])
async def test_a_bug_is_logged_once_with_its_traceback_and_is_no_outage(
    policy: str, unknown: bool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    sleep = ManualSleep(clock)
    guarded = GuardedBackend(Broken(), policy=policy, clock=clock, sleep=sleep)  # type: ignore[arg-type]
    for _ in range(3):
        decision = await one(guarded, clock)  # this call answered by the policy: memory, or uncounted
        assert decision.allowed
        assert decision.unknown == unknown
        await guarded.adjust("acct", ONE, clock())
        await guarded.peek("acct", LIMITS, clock())
        guarded.settle("acct", ONE, clock())  # dropped
        assert not guarded.degraded
    assert guarded.next_probe_at is None
    assert not sleep.sleeping  # no probe: the storage was never declared down
    assert warnings(caplog) == []

    reports = bugs(caplog)
    assert [r.bug for r in reports] == [
        "acquire on Broken()",
        "adjust on Broken()",
        "peek on Broken()",
        "settle on Broken()",
    ]
    assert all(r.levelno == logging.ERROR for r in reports)
    first = reports[0]
    assert first.getMessage() == "unexpected TypeError in acquire on Broken() (a bug; later ones here are not logged)"
    assert first.exc_info is None  # handed to handlers as redacted text only
    assert first.exc_text is not None
    assert first.exc_text.startswith("Traceback (most recent call last):")
    assert 'raise TypeError("unsupported operand type(s)' in first.exc_text
    assert first.exc_text.endswith("TypeError: unsupported operand type(s) for +: 'float' and 'NoneType'")


async def test_a_bug_under_policy_closed_refuses_that_call_only() -> None:
    guarded = GuardedBackend(Broken(), policy="closed", clock=ManualClock(T0))  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(LimitStorageUnavailable):
            await guarded.acquire("acct", LIMITS, ONE, ONE, T0)
        assert not guarded.degraded
    await guarded.ping()  # the storage answers: nothing is down


def test_an_unknown_policy_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="KEYLIMIT_FAILURE_POLICY"):
        GuardedBackend(MemoryBackend(WINDOW), policy="maybe")  # type: ignore[arg-type]
