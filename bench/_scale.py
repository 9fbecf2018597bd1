"""Does the overhead stay flat as the stores fill? keylimit with 1 key and with ``keys`` keys
in its SQLite file, and with 1 and ``accounts`` active accounts in its limit backend
(memory and Redis), interleaved with the bare app. Also Redis memory per active account."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from . import _common as c
from . import _inprocess

FILLER_HASH = "$argon2id$v=19$m=8,t=1,p=1$ZmlsbGVyZmlsbGVy$ZmlsbGVyZmlsbGVyZmlsbGVyZmlsbGVyZmlsbGVy"
"""Filler records are never verified: a fixed string stands in for their hash."""
PRO = (6_000, 10_000_000, 1_000_000)
CHARGE = (1, 50, 0)
NEED = (1, 50, 1)
USED = (0, 0, 200)
"""What each pre-charged account did: one request of 50 prompt tokens that then used 200
completion tokens (settled as the rate limiter does, by an adjust)."""


def fill_keys(keys_db: Path, count: int) -> float:
    """Insert ``count`` filler keys into the file in one transaction; the seconds it took."""
    from keylimit.auth._keys import base62
    from keylimit.stores._codec import KEY_FIELDS

    t0 = time.perf_counter()
    now = time.time()
    rows = (
        (
            f"f{base62(i, 11)}",
            f"filler{i}",
            "filler",
            "sdk",
            "full",
            FILLER_HASH,
            "forii_sk_filler",
            now,
            "active",
            None,
            None,
            None,
            None,
        )
        for i in range(count)
    )
    conn = sqlite3.connect(keys_db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        columns, marks = ", ".join(KEY_FIELDS), ", ".join("?" * len(KEY_FIELDS))
        conn.executemany(f"INSERT INTO keys ({columns}) VALUES ({marks})", rows)  # noqa: S608 - constants
        conn.execute("COMMIT")
        total = conn.execute("SELECT count(*) FROM keys").fetchone()[0]
    finally:
        conn.close()
    if total != count + 1:
        raise SystemExit(f"the filled key store holds {total} keys, not {count + 1}")
    return time.perf_counter() - t0


async def lookup_us(keys_db: Path, kid: str, n: int = 500) -> float:
    """Median µs of one ``get_key`` on the SQLite store (the lookup of a cache miss)."""
    from keylimit.stores.sqlite import SQLiteKeyStore

    store = SQLiteKeyStore(keys_db)
    try:
        await store.get_key(kid)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await store.get_key(kid)
            samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        await store.aclose()
    return round(statistics.median(samples), 2)


async def charge_memory(backend: Any, count: int) -> None:
    now = time.time()
    for i in range(count):
        key = f"acct:filler{i}"
        await backend.acquire(key, PRO, CHARGE, NEED, now)
        await backend.adjust(key, USED, now)


async def charge_redis(url: str, count: int, window: float = 60.0, batch: int = 2000) -> None:
    """Pre-charge ``count`` accounts through keylimit's Redis backend: admissions ``batch`` at
    a time, their settlements batched by the backend itself."""
    from keylimit.backends.redis import RedisBackend

    backend = RedisBackend.from_url(url, window)
    now = time.time()
    try:
        for start in range(0, count, batch):
            names = [f"acct:filler{i}" for i in range(start, min(count, start + batch))]
            await asyncio.gather(*(backend.acquire(name, PRO, CHARGE, NEED, now) for name in names))
            for name in names:
                backend.settle(name, USED, now)
            await backend.flush()
    finally:
        await backend.aclose()


async def redis_memory(count: int) -> dict[str, Any]:
    """used_memory growth per account after ``count`` pro-plan accounts, and one account's state key."""
    from keylimit.backends.redis import state_key

    server = c.RedisServer()
    try:
        before = int(server.info("memory")["used_memory"])
        await charge_redis(server.url, count)
        after = int(server.info("memory")["used_memory"])
        one = int(server.command("MEMORY", "USAGE", state_key("acct:filler0")).lstrip(":"))
        keys = int(server.command("DBSIZE").lstrip(":"))
    finally:
        server.stop()
    return {
        "accounts": count,
        "keys": keys,
        "used_memory_delta_bytes": after - before,
        "bytes_per_account": round((after - before) / count, 1),
        "memory_usage_one_account_bytes": one,
    }


async def run(keys: int, accounts: int, n: int, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"keys": keys, "accounts": accounts}
    filled_db = c.tempdir() / "keys.db"
    config = c.keylimit_config(filled_db, "memory://")
    token = await c.create_key(config)
    out["fill_seconds"] = round(fill_keys(filled_db, keys - 1), 1)
    kid = token.split("_")[-2]

    subjects: dict[str, c.Subject] = {"bare": c.Subject(c.chat_app())}
    await c.start(subjects["bare"])
    subjects["keylimit-mem"] = await c.protect_subject("memory://")
    subjects[f"keylimit-mem/{keys}-keys"] = await _reuse(filled_db, token)
    subjects[f"keylimit-mem/{accounts}-accounts"] = charged = await c.protect_subject("memory://")
    t0 = time.perf_counter()
    await charge_memory(_limits_of(charged), accounts)
    out["charge_memory_seconds"] = round(time.perf_counter() - t0, 1)
    subjects["keylimit-redis"] = await c.protect_subject(c.RedisServer().url)
    redis_server = c.RedisServer()
    t0 = time.perf_counter()
    await charge_redis(redis_server.url, accounts)
    out["charge_redis_seconds"] = round(time.perf_counter() - t0, 1)
    subjects[f"keylimit-redis/{accounts}-accounts"] = await c.protect_subject(redis_server.url)

    for name, s in subjects.items():
        await c.check(s, name)
    calls = {name: _inprocess._caller(s) for name, s in subjects.items()}
    try:
        per_round = await c.interleaved(calls, n, rounds)
        out["active_in_memory_backend"] = len(_limits_of(charged))
        out["active_in_redis"] = int(redis_server.command("DBSIZE").lstrip(":"))
        out["key_lookup_us"] = {
            "1": await lookup_us(Path(subjects["keylimit-mem"].info["keys_db"]), _kid_of(subjects["keylimit-mem"])),
            str(keys): await lookup_us(filled_db, kid),
        }
    finally:
        for s in subjects.values():
            await c.close(s)
        redis_server.stop()
    us = {name: c.median(xs) for name, xs in per_round.items()}
    out["us_per_request"] = us
    out["overhead_us"] = {name: round(v - us["bare"], 2) for name, v in us.items() if name != "bare"}
    out["per_round_us"] = per_round
    out["redis_memory"] = await redis_memory(accounts)
    return out


async def _reuse(keys_db: Path, token: str) -> c.Subject:
    config = c.keylimit_config(keys_db, "memory://", cache_ttl=c.HOT_CACHE_TTL)
    subject = c.Subject(c.protect_class()(c.chat_app(), config), c.bearer(token), info={"keys_db": str(keys_db)})
    await c.start(subject)
    return subject


def _limits_of(subject: c.Subject) -> Any:
    """The limit backend of a ``Protect`` subject."""
    app: Any = subject.app
    return app.limits


def _kid_of(subject: c.Subject) -> str:
    token = subject.headers[0][1].decode().removeprefix("Bearer ")
    return token.split("_")[-2]
