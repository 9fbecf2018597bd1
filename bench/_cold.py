"""The cold path: what one argon2 verification costs, and whether verifications stall the
event loop (a 1 ms ticker's lag while ``count`` keys, none of them cached, are verified
at once through the authenticator)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from . import _common as c


def verify_ms(params: Any, repeat: int) -> float:
    """Median milliseconds of one argon2 verification with ``params``."""
    from keylimit import Hasher

    hasher = Hasher(params)
    token = "forii_sk_benchbenchben_" + "x" * 38
    hashed = hasher.hash(token)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        if not hasher.verify(hashed, token):
            raise SystemExit("argon2 verification failed")
        samples.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(samples), 2)


async def ticker(stop: asyncio.Event, lags: list[float], period: float = 0.001) -> None:
    """Appends, every ``period``, how much later than asked the loop woke it (ms)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(period)
        lags.append((time.perf_counter() - t0 - period) * 1e3)


def _lag_summary(lags: list[float]) -> dict[str, float]:
    return {
        "ticks": len(lags),
        "p50_ms": round(statistics.median(lags), 3),
        "p99_ms": round(c.quantile(lags, 0.99), 3),
        "max_ms": round(max(lags), 3),
    }


async def loop_lag(count: int) -> dict[str, Any]:
    from keylimit import Config, KeyManager
    from keylimit.auth._authenticator import Authenticator
    from keylimit.config._build import hasher, key_format, key_manager, key_store, plans

    config: Config = c.keylimit_config(c.tempdir() / "keys.db", "memory://")
    manager: KeyManager = key_manager(config)
    try:
        tokens = [t for _, t in await asyncio.gather(*(manager.create_key(f"cold{i}", "cold") for i in range(count)))]
    finally:
        await manager.store.aclose()
    store = key_store(config)
    auth = Authenticator(
        store,
        key_format=key_format(config),
        hasher=hasher(config),
        plans=plans(config),
        verify_concurrency=config.verify_concurrency,
    )
    await auth.start()
    stop = asyncio.Event()
    idle: list[float] = []
    tick = asyncio.ensure_future(ticker(stop, idle))
    await asyncio.sleep(0.5)
    stop.set()
    await tick

    latencies: list[float] = []

    async def one(token: str) -> None:
        t0 = time.perf_counter()
        await auth.authenticate(f"Bearer {token}".encode(), "127.0.0.1")
        latencies.append((time.perf_counter() - t0) * 1e3)

    stop = asyncio.Event()
    busy: list[float] = []
    tick = asyncio.ensure_future(ticker(stop, busy))
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(t) for t in tokens))
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        await tick
        await auth.aclose()
        await store.aclose()
    return {
        "verifications": count,
        "verify_concurrency": config.verify_concurrency,
        "wall_seconds": round(wall, 2),
        "verifications_per_second": round(count / wall, 1),
        "request_latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(c.quantile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
        },
        "loop_lag_idle": _lag_summary(idle),
        "loop_lag_during": _lag_summary(busy),
    }


async def run(count: int, repeat: int) -> dict[str, Any]:
    from keylimit import Config
    from keylimit.auth._hashing import PRODUCTION

    configured = Config.from_env().argon2
    out: dict[str, Any] = {
        "argon2_production": {"params": _params(PRODUCTION), "verify_ms": verify_ms(PRODUCTION, repeat)},
        "argon2_config": {"params": _params(configured), "verify_ms": verify_ms(configured, repeat)},
    }
    # A cached verification lapses after cache_ttl seconds; the next request reads the key
    # and its account from the store again, and runs argon2 only if the stored hash changed.
    out["cache_ttl_seconds"] = Config.from_env().cache_ttl
    out["lag"] = await loop_lag(count)
    return out


def _params(p: Any) -> str:
    return f"t={p.time_cost}, m={p.memory_cost} KiB, p={p.parallelism}"
