"""The limit storage through ``Protect``: it comes back while the servers are idle, and it has a bug.

Run: ``.venv/bin/pytest -q tests/faults/test_limit_storage.py``
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from limits.aio.storage import MemoryStorage

from keylimit import Config, ManualClock, Protect, _diagnostics
from keylimit.auth._hashing import CHEAPEST
from keylimit.backends.guarded import GuardedBackend
from keylimit.config._build import key_manager
from tests._redis import RedisServer
from tests._sleep import ManualSleep

from ._apps import app, bearer

START = 1_700_000_040.0  # a minute boundary: the whole test stays in one window
FREE_REQUESTS = 60  # the default plan's requests per minute


def client(protect: Protect) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(protect), base_url="http://testserver")


def guard_of(protect: Protect) -> GuardedBackend:
    assert isinstance(protect.limits, GuardedBackend)
    return protect.limits


@pytest.fixture(autouse=True)
def fresh_bug_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs are logged once per process and place; each test starts with none logged."""
    monkeypatch.setattr(_diagnostics, "_reported", set())


@pytest.fixture
def limit_redis() -> Iterator[RedisServer]:
    """The limit storage alone (the keys live elsewhere), stopped and started by the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def two_processes(redis_url: str, limit_redis: RedisServer) -> AsyncIterator[list[Protect]]:
    clock = ManualClock(START)
    config = Config(keys_url=redis_url, limits_url=limit_redis.url, argon2=CHEAPEST, clock=clock, redis_timeout=0.5)
    processes = [Protect(app(), config), Protect(app(), config)]
    try:
        yield processes
    finally:
        for protect in processes:
            await protect.aclose()


@pytest.mark.redis
async def test_an_idle_pair_counts_the_first_burst_after_recovery_in_redis(
    two_processes: list[Protect], limit_redis: RedisServer
) -> None:
    """Issue 11, case 7: two processes idle while Redis comes back, then 150 concurrent requests
    on a plan of 60 requests a minute. Each admitted 60 from its own memory; now Redis counts."""
    first, second = two_processes
    timers = [ManualSleep(), ManualSleep()]
    for protect, timer in zip(two_processes, timers, strict=True):
        guard_of(protect).sleep = timer
    _, token = await key_manager(first.config, first.store).create_key("acct_burst", "burst")
    clock = first.config.clock
    assert isinstance(clock, ManualClock)

    async with client(first) as a, client(second) as b:
        limit_redis.stop()
        for c in (a, b):
            assert (await c.get("/whoami", headers=bearer(token))).status_code == 200  # counted in memory
        assert all(guard_of(p).degraded for p in two_processes)

        limit_redis.start()  # the same port, empty
        clock.advance(35)
        for timer in timers:
            await timer.wake()  # the probes alone: no request reaches either process
        for protect in two_processes:
            await guard_of(protect).join_probe()
            assert not guard_of(protect).degraded

        answers = await asyncio.gather(*((a, b)[i % 2].get("/whoami", headers=bearer(token)) for i in range(150)))
    statuses = collections.Counter(answer.status_code for answer in answers)
    assert statuses == {200: FREE_REQUESTS, 429: 150 - FREE_REQUESTS}


class BuggyStorage(MemoryStorage):
    """A ``limits`` storage (``buggy://``) whose reads raise ``fault``: a plugged-in component's bug."""

    STORAGE_SCHEME = ["async+buggy"]
    fault: Exception | None = None

    async def get(self, key: str) -> int:
        if self.fault is not None:
            raise self.fault
        return await super().get(key)


@pytest.fixture
async def buggy() -> AsyncIterator[Protect]:
    config = Config(keys_url="memory://", limits_url="buggy://", argon2=CHEAPEST, clock=ManualClock(START))
    protect = Protect(app(), config)
    try:
        yield protect
    finally:
        await protect.aclose()


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


async def test_a_bug_in_the_limit_backend_is_served_logged_once_and_redacted(
    buggy: Protect, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, case 9: a TypeError is a bug, not an outage."""
    caplog.set_level(logging.INFO, logger="keylimit")
    _, token = await key_manager(buggy.config, buggy.store).create_key("acct_bug", "bug")
    monkeypatch.setattr(BuggyStorage, "fault", TypeError(f"cannot add 'NoneType' to the counter of {token}"))

    async with client(buggy) as c:
        answers = [await c.get("/whoami", headers=bearer(token)) for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 200, answer.text  # served, from this process's memory for the call
        assert answer.json() == {"account": "acct_bug"}
    assert answers[1].headers["x-ratelimit-remaining-requests"] == str(FREE_REQUESTS - 2)
    assert not guard_of(buggy).degraded  # no outage declared, no outage warning
    assert not any(getattr(r, "state", None) == "down" for r in caplog.records)

    [report] = [r for r in caplog.records if hasattr(r, "bug")]  # two requests, one record
    assert report.levelno == logging.ERROR
    assert "unexpected TypeError in acquire on" in report.getMessage()
    text = log_text(caplog)
    assert "Traceback (most recent call last):" in text
    assert "in get\n    raise self.fault" in text
    assert "TypeError: cannot add 'NoneType' to the counter of " in text
    assert token not in text
    assert token.rsplit("_", 1)[1][:16] not in text  # nor any long run of its secret


async def test_a_storage_failure_still_trips_the_policy(
    buggy: Protect, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="keylimit")
    _, token = await key_manager(buggy.config, buggy.store).create_key("acct_down", "down")
    monkeypatch.setattr(BuggyStorage, "fault", ConnectionRefusedError(111, "Connection refused"))

    async with client(buggy) as c:
        answers = [await c.get("/whoami", headers=bearer(token)) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [200, 200]  # policy fallback: counted in memory
    assert guard_of(buggy).degraded
    [down] = [r for r in caplog.records if getattr(r, "state", None) == "down"]
    assert down.getMessage() == (
        "rate limit storage buggy:// unavailable (ConnectionRefusedError): counting in this process only "
        "until it answers again"
    )
    assert not [r for r in caplog.records if hasattr(r, "bug")]
