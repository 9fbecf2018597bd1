"""Issue 6, item 3: a flood of wrong-secret tokens for a real key id from one address.

Served by a real uvicorn, with production argon2 (``Argon2Params()``), driven by httpx clients
from distinct loopback addresses (127.0.0.x). Valid traffic from other addresses keeps getting
200; the attacker gets 429 once ``KEYLIMIT_AUTH_FAILURES_PER_MINUTE`` failures are counted, and
argon2 runs at most once per counted failure (plus the requests already in flight when the
throttle closed), however long the flood goes on. The valid traffic's p99 latency, idle and
during the flood, is printed (run with ``-s``), not asserted.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time

import httpx

from keylimit import Argon2Params, Config, Hasher, Limits, ManualClock

from ._apps import protected
from ._keys import ADMIN, forged, make_key
from ._server import client_from
from .conftest import Serve

START = 1_700_000_040.0  # frozen: the throttle's minute never turns during the test
FAILURES = 30  # KEYLIMIT_AUTH_FAILURES_PER_MINUTE's default
ATTACKER = "127.0.0.66"
GARBAGE_SENDER = "127.0.0.67"
VALID_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
FLOOD = 600
FLOOD_CONCURRENCY = 16
VALID_PER_CLIENT = 50


class CountingHasher(Hasher):
    """The production hasher, counting verifications (from worker threads)."""

    __slots__ = ("_lock", "results")

    def __init__(self, params: Argon2Params) -> None:
        super().__init__(params)
        self._lock = threading.Lock()
        self.results: list[bool] = []

    def verify(self, hashed: str, token: str) -> bool:
        ok = super().verify(hashed, token)
        with self._lock:
            self.results.append(ok)
        return ok

    @property
    def failed(self) -> int:
        return self.results.count(False)


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def figures(results: list[tuple[int, float]]) -> str:
    latencies = [t for _, t in results]
    median, worst = statistics.median(latencies) * 1000, p99(latencies) * 1000
    return f"{len(results)} requests, median {median:.1f} ms, p99 {worst:.1f} ms"


async def valid_traffic(
    url: str, token: str, *, minimum: int, until: asyncio.Event | None = None
) -> list[tuple[int, float]]:
    """Each valid address sends requests one after another: at least ``minimum``, and until ``until`` is set."""

    async def one_client(address: str) -> list[tuple[int, float]]:
        results: list[tuple[int, float]] = []
        async with client_from(address, url, headers={"authorization": f"Bearer {token}"}) as client:
            while len(results) < minimum or (until is not None and not until.is_set()):
                began = time.perf_counter()
                response = await client.get("/whoami")
                results.append((response.status_code, time.perf_counter() - began))
        return results

    per_client = await asyncio.gather(*(one_client(a) for a in VALID_ADDRESSES))
    return [r for results in per_client for r in results]


async def flood(url: str, tokens: list[str], address: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=FLOOD_CONCURRENCY)
    slots = asyncio.Semaphore(FLOOD_CONCURRENCY)
    async with client_from(address, url, limits=limits) as client:

        async def attack(token: str) -> httpx.Response:
            async with slots:
                return await client.get("/whoami", headers={"authorization": f"Bearer {token}"})

        return list(await asyncio.gather(*(attack(t) for t in tokens)))


async def test_a_wrong_secret_flood_is_throttled_and_valid_traffic_flows(serve: Serve) -> None:
    config = Config(
        keys_url="memory://",
        admin_token=ADMIN,
        plans={"free": Limits(1_000_000, 10**9, 10**9)},  # plan limits are not what is tested here
        clock=ManualClock(START),
    )
    assert config.argon2 == Argon2Params()  # production cost: every verification is real work
    assert config.auth_failures_per_minute == FAILURES
    protect = protected(config)
    hasher = CountingHasher(config.argon2)
    protect.authenticator.hasher = hasher
    server = serve(protect)
    token = make_key(server.url)
    assert httpx.get(f"{server.url}/whoami", headers={"authorization": f"Bearer {token}"}).status_code == 200

    idle = await valid_traffic(server.url, token, minimum=VALID_PER_CLIENT)
    assert {status for status, _ in idle} == {200}
    assert hasher.results == [True]  # one verification, then the cache

    done = asyncio.Event()

    async def attacker() -> list[httpx.Response]:
        try:
            return await flood(server.url, [forged(token) for _ in range(FLOOD)], ATTACKER)
        finally:
            done.set()

    attacked, during = await asyncio.gather(attacker(), valid_traffic(server.url, token, minimum=10, until=done))

    statuses = [r.status_code for r in attacked]
    refused, throttled = statuses.count(401), statuses.count(429)
    valid_statuses = {status for status, _ in during}
    print(
        f"\nflood: {FLOOD} wrong-secret tokens for key_{token.split('_')[-2]} from {ATTACKER}, "
        f"{FLOOD_CONCURRENCY} at a time: {refused} x 401, {throttled} x 429, "
        f"{sum(s >= 500 for s in statuses)} x 5xx; argon2 verifications failed: {hasher.failed}"
    )
    print(
        f"valid traffic from {len(VALID_ADDRESSES)} addresses (statuses {sorted(valid_statuses)}): "
        f"idle {figures(idle)}; during the flood {figures(during)}"
    )
    assert valid_statuses == {200}
    assert refused + throttled == FLOOD
    # Failures are counted when their verification ends: the requests already past the throttle
    # check by then (at most one per concurrent connection) still get their verification.
    assert FAILURES <= refused < FAILURES + FLOOD_CONCURRENCY
    assert hasher.failed == refused  # one argon2 run per 401, none per 429
    assert hasher.results.count(True) == 1  # the valid key was never verified again
    last = attacked[-1]
    assert last.status_code == 429
    error = last.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "too_many_auth_failures")
    assert int(last.headers["retry-after"]) >= 1
    assert token not in last.text

    # The flood goes on: every further try is refused before any lookup or argon2.
    more = await flood(server.url, [forged(token) for _ in range(200)], ATTACKER)
    assert {r.status_code for r in more} == {429}
    assert hasher.failed == refused

    # Garbage (a bad checksum) from another address never reaches argon2, and is throttled alike.
    garbage = token[:-1] + ("A" if token[-1] != "A" else "B")
    tries = await flood(server.url, [garbage] * 100, GARBAGE_SENDER)
    codes = [r.status_code for r in tries]
    assert codes.count(401) == FAILURES  # nothing to wait for: the count is exact
    assert codes.count(429) == 100 - FAILURES
    assert hasher.failed == refused
