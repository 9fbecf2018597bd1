"""Redis, as both key store and limit backend, stopped and restarted under steady traffic
(issue 6, Faults): verified keys keep working, an unseen key gets 503 (never 401), no
request gets a 500; after recovery no key, revocation or plan change is lost and the
limits are shared again, from the limit storage's own probe (it needs no request).

Run: ``.venv/bin/pytest -q tests/faults/test_redis_outage.py``
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterator

import httpx
import pytest

from keylimit import Config, Limits, ManualClock, Protect
from keylimit.auth._hashing import CHEAPEST
from keylimit.backends.guarded import GuardedBackend
from keylimit.config._build import key_manager
from keylimit.ratelimit._plans import DEFAULT_PLANS
from keylimit.stores.redis import RedisKeyStore
from tests._redis import RedisServer
from tests._sleep import ManualSleep

from ._apps import app, bearer

pytestmark = pytest.mark.redis

CLIENTS = 4
PER_PHASE = 60  # responses each phase waits for, across all clients
TTL = 5.0
START = 1_700_000_040.0  # a minute boundary plus 10 s: the whole test stays in one window
FREE = Limits(100_000, 10**9, 10**8)  # large enough that steady traffic never meets a 429
STARTER = Limits(200_000, 2 * 10**9, 2 * 10**8)
WAIT = 10.0  # bound on waiting for the subscriber (real time; it backs off at most 5 s)


@pytest.fixture
def redis_with_disk() -> Iterator[RedisServer]:
    """A private redis-server that keeps its data across a stop and start (AOF), as a real one would."""
    server = RedisServer("--appendonly", "yes").start()
    try:
        yield server
    finally:
        server.stop()


def make_protect(url: str, clock: ManualClock) -> Protect:
    config = Config(
        keys_url=url,
        limits_url=url,
        argon2=CHEAPEST,
        clock=clock,
        cache_ttl=TTL,
        redis_timeout=0.5,
        plans={**DEFAULT_PLANS, "free": FREE, "starter": STARTER},
    )
    return Protect(app(), config)


def client(protect: Protect) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(protect), base_url="http://testserver")


def assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "message": "The key store is unavailable. Try again shortly.",
            "type": "server_error",
            "param": None,
            "code": "service_unavailable",
        }
    }
    assert int(response.headers["retry-after"]) >= 1


async def test_redis_stopped_and_restarted_under_traffic(
    redis_with_disk: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keylimit")
    clock = ManualClock(START)
    protect = make_protect(redis_with_disk.url, clock)
    other: Protect | None = None
    store, limits = protect.store, protect.limits
    assert isinstance(store, RedisKeyStore)
    assert isinstance(limits, GuardedBackend)
    limits.sleep = probe_timer = ManualSleep()
    manager = key_manager(protect.config, store)

    # Before the outage: three keys in use, one revoked, one plan changed, two never used.
    tokens = {acct: (await manager.create_key(acct, "steady"))[1] for acct in ("acct_a", "acct_b", "acct_c")}
    revoked_record, revoked = await manager.create_key("acct_b", "to revoke")
    _, unseen = await manager.create_key("acct_c", "never used before the outage")
    _, shared = await manager.create_key("acct_s", "used only after recovery")

    # phase -> (token account, status) of every steady response
    seen: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    phase = "before"
    done = asyncio.Event()
    sent = 0

    async def steady(c: httpx.AsyncClient, offset: int) -> None:
        nonlocal sent
        accounts = list(tokens)
        i = offset
        while not done.is_set():
            account = accounts[i % len(accounts)]
            i += 1
            sent += 1
            response = await c.get("/whoami", headers=bearer(tokens[account]))
            seen[phase].append((account, response.status_code))
            if response.status_code == 200:
                assert response.json() == {"account": account}
            await asyncio.sleep(0)  # answers from the cache never suspend: let the other clients run

    async def responses(n: int) -> None:
        target = len(seen[phase]) + n
        while len(seen[phase]) < target:
            await asyncio.sleep(0)

    async with client(protect) as c:
        for token in tokens.values():
            assert (await c.get("/whoami", headers=bearer(token))).status_code == 200
        assert (await c.get("/whoami", headers=bearer(revoked))).status_code == 200
        await manager.revoke_key("acct_b", revoked_record.id)
        assert (await c.get("/whoami", headers=bearer(revoked))).status_code == 401
        await manager.set_plan("acct_a", "starter")
        changed = await c.get("/whoami", headers=bearer(tokens["acct_a"]))
        assert changed.headers["x-ratelimit-limit-requests"] == str(STARTER.requests)
        await asyncio.wait_for(store._live.wait(), WAIT)

        async def outage() -> None:
            nonlocal phase
            await responses(PER_PHASE)
            await asyncio.to_thread(redis_with_disk.stop)
            phase = "down"
            await asyncio.wait_for(store._lost.wait(), WAIT)
            await responses(PER_PHASE)
            assert limits.degraded  # counting in this process meanwhile (policy fallback)
            await probe_timer.wake()  # a second later the probe is refused, and waits twice as long
            await probe_timer.until_asleep()
            assert limits.degraded
            assert_503(await c.get("/whoami", headers=bearer(unseen)))
            assert_503(await c.get("/whoami", headers=bearer(revoked)))  # dropped at revocation: never stale

            clock.advance(TTL + 1)  # every cache entry lapses; the store cannot revalidate them
            phase = "down, past the cache TTL"
            await responses(PER_PHASE)
            assert_503(await c.get("/whoami", headers=bearer(unseen)))

            await asyncio.to_thread(redis_with_disk.start)
            phase = "restarted"
            await probe_timer.wake()
            await limits.join_probe()
            assert not limits.degraded
            assert probe_timer.asked == [1.0, 2.0]
            await asyncio.wait_for(store._live.wait(), WAIT)
            await responses(PER_PHASE)
            done.set()

        results = await asyncio.gather(outage(), *(steady(c, n) for n in range(CLIENTS)), return_exceptions=True)
        exceptions = [r for r in results if isinstance(r, BaseException)]
        assert exceptions == []

        statuses = collections.Counter(status for answers in seen.values() for _, status in answers)
        steady_count = sum(statuses.values())
        print(
            f"\nsteady requests: {steady_count} ({dict(statuses)}), by phase: "
            f"{ {p: len(a) for p, a in seen.items()} }, exceptions: {len(exceptions)}"
        )
        assert statuses == {200: steady_count}  # no 5xx, no 401, no 429 in any phase
        assert sent == steady_count
        for name in ("before", "down", "down, past the cache TTL", "restarted"):
            assert len(seen[name]) >= PER_PHASE

        # After recovery, every entry lapses again and is revalidated against the restarted Redis.
        clock.advance(TTL + 1)
        assert (await c.get("/whoami", headers=bearer(revoked))).status_code == 401
        changed = await c.get("/whoami", headers=bearer(tokens["acct_a"]))
        assert changed.headers["x-ratelimit-limit-requests"] == str(STARTER.requests)
        assert (await c.get("/whoami", headers=bearer(unseen))).status_code == 200

    # The key store's state changes, logged once each (a write-behind of last-used times that
    # happens to fall in the outage logs its own warning, which is not a state change).
    outage_logs = [r.getMessage() for r in caplog.records if r.name == "keylimit.auth" and hasattr(r, "state")]
    assert [m.split(" (")[0] for m in outage_logs] == ["the key store is unavailable", "the key store answers again"]

    # A second instance with a cold cache (another process) sees everything made before the
    # outage, and both count into the same Redis again.
    try:
        other = make_protect(redis_with_disk.url, clock)
        async with client(protect) as a, client(other) as b:
            for account, token in tokens.items():
                answer = await b.get("/whoami", headers=bearer(token))
                assert answer.status_code == 200
                expected = STARTER if account == "acct_a" else FREE
                assert answer.headers["x-ratelimit-limit-requests"] == str(expected.requests)
            assert (await b.get("/whoami", headers=bearer(revoked))).status_code == 401
            assert (await b.get("/whoami", headers=bearer(unseen))).status_code == 200

            for _ in range(7):
                assert (await a.get("/whoami", headers=bearer(shared))).status_code == 200
            answer = await b.get("/whoami", headers=bearer(shared))
            assert int(answer.headers["x-ratelimit-remaining-requests"]) == FREE.requests - 8
            standing = await protect.limits.peek("acct:acct_s", FREE.as_tuple(), clock())
            assert standing.used[0] == 8
        await protect.limits.flush()
        assert not limits.degraded
    finally:
        await protect.aclose()
        if other is not None:
            await other.aclose()
