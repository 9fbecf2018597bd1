"""Issue 6, item 3 and issue 11, case 5: a flood of wrong-secret tokens and garbage from one address.

Served by a real uvicorn, with production argon2 (``Argon2Params()``), driven by httpx clients
from distinct loopback addresses (127.0.0.x). The flood names real keys (their kid and type)
with random secrets: each is refused by the key's check value, with no argon2 at all, and
nothing is locked out: afterwards, keys never used before (SDK and API) and the admin token
work from the flooding address and from any other. Valid traffic from other addresses keeps
getting 200 throughout; its p99 latency, idle and during the flood, is printed (run with
``-s``), not asserted.
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

START = 1_700_000_040.0
ATTACKER = "127.0.0.66"
OTHER = "127.0.0.67"
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


def garbage(token: str) -> list[str]:
    """Tokens refused by their format or checksum, before any lookup."""
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [flipped, token[:-1], token + "0", "forii_sk_nope", "not-a-key-at-all"]


async def test_a_wrong_secret_flood_locks_out_no_key_and_costs_no_argon2(serve: Serve) -> None:
    config = Config(
        keys_url="memory://",
        admin_token=ADMIN,
        plans={"free": Limits(1_000_000, 10**9, 10**9)},  # plan limits are not what is tested here
        clock=ManualClock(START),
    )
    assert config.argon2 == Argon2Params()  # production cost: every verification is real work
    protect = protected(config)
    hasher = CountingHasher(config.argon2)
    protect.authenticator.hasher = hasher
    server = serve(protect)
    token = make_key(server.url)
    cold_sdk, cold_api = make_key(server.url, "acct_2"), make_key(server.url, "acct_3", "api")
    cold_elsewhere = make_key(server.url, "acct_4", "api")
    assert httpx.get(f"{server.url}/whoami", headers={"authorization": f"Bearer {token}"}).status_code == 200

    idle = await valid_traffic(server.url, token, minimum=VALID_PER_CLIENT)
    assert {status for status, _ in idle} == {200}
    assert hasher.results == [True]  # one verification, then the cache

    done = asyncio.Event()
    targets = (token, cold_sdk, cold_api, cold_elsewhere)

    took: list[float] = []

    async def attacker() -> list[httpx.Response]:
        began = time.perf_counter()
        try:
            return await flood(server.url, [forged(targets[i % 4]) for i in range(FLOOD)], ATTACKER)
        finally:
            took.append(time.perf_counter() - began)
            done.set()

    attacked, during = await asyncio.gather(attacker(), valid_traffic(server.url, token, minimum=10, until=done))
    junk = await flood(server.url, [g for t in targets for g in garbage(t)] * 10, ATTACKER)

    statuses = [r.status_code for r in attacked]
    valid_statuses = {status for status, _ in during}
    print(
        f"\nflood: {FLOOD} wrong-secret tokens for 4 real keys from {ATTACKER}, {FLOOD_CONCURRENCY} at a time: "
        f"{statuses.count(401)} x 401, {sum(s >= 500 for s in statuses)} x 5xx, then {len(junk)} garbage tokens; "
        f"argon2 verifications failed: {hasher.failed}"
    )
    print(
        f"valid traffic from {len(VALID_ADDRESSES)} addresses (statuses {sorted(valid_statuses)}): "
        f"idle {figures(idle)}; during the flood ({took[0]:.2f} s) {figures(during)}"
    )
    assert valid_statuses == {200}
    assert statuses == [401] * FLOOD
    assert {r.status_code for r in junk} == {401}
    error = attacked[-1].json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert not [r for r in attacked if any(t in r.text for t in targets)]
    assert hasher.failed == 0  # every wrong secret was refused by its key's check value

    # Nothing is locked out: keys never used before, from the flooding address and another,
    # and the admin token from both.
    for key, address in ((cold_sdk, ATTACKER), (cold_api, ATTACKER), (cold_elsewhere, OTHER)):
        async with client_from(address, server.url) as client:
            response = await client.get("/whoami", headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
    for address in (ATTACKER, OTHER):
        async with client_from(address, server.url) as client:
            response = await client.get("/v1/accounts/acct_2/apiKeys", headers={"authorization": f"Bearer {ADMIN}"})
            assert response.status_code == 200, response.text
    assert hasher.results == [True] * 4  # the first key, then each cold key once: argon2 for valid keys only
