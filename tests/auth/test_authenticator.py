"""The hot path's behaviour: storage at rest, logs, expiry, concurrency, argon2 params, failed
authentications, last_used_at and a store that is down."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from keylimit import KeyFormat, KeyManager, open_key_store
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST, Argon2Params, Hasher
from keylimit.stores.memory import MemoryKeyStore

from .conftest import CountingHasher, Harness


def _secret_of(token: str) -> str:
    parsed = KeyFormat().parse(token)
    assert parsed is not None
    return token[-(32 + 6) : -6]


def _material(token: str) -> list[str]:
    secret = _secret_of(token)
    return [token, *(secret[i : i + 8] for i in range(len(secret) - 7))]


# --- at rest and in logs


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
async def test_stored_record_holds_an_argon2id_hash_and_no_key_material(scheme: str, tmp_path: Path) -> None:
    store = open_key_store("memory://" if scheme == "memory" else f"sqlite:///{tmp_path}/keys.db")
    manager = KeyManager(store, hasher=Hasher(CHEAPEST))
    try:
        record, token = await manager.create_key("acct_1", "prod-api")
        stored = await store.get_key(record.kid)
    finally:
        await store.aclose()
    assert stored is not None
    assert stored.hash.startswith("$argon2id$")
    fields = [str(getattr(stored, name)) for name in stored.__slots__] + [repr(stored)]  # type: ignore[attr-defined]
    if scheme == "sqlite":
        fields += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir()]
    for text in fields:
        for piece in _material(token):
            assert piece not in text


async def test_logs_hold_no_key_material_across_create_verify_and_revoke(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    record, token = await harness.manager.create_key("acct_1", "prod-api")
    body = token[:-6]
    wrong = body[:-1] + ("A" if body[-1] != "A" else "B")
    assert (await harness.get(token)).status_code == 200
    assert (await harness.get(token)).status_code == 200
    assert (await harness.get(wrong + token[-6:])).status_code == 401
    await harness.manager.revoke_key("acct_1", record.id)
    assert (await harness.get(token)).status_code == 401
    await harness.auth.aclose()

    assert any(r.name == "keylimit.auth" for r in caplog.records)
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {getattr(r, 'stack_info', '') or ''}" for r in caplog.records
    )
    for piece in _material(token):
        assert piece not in logged
    assert record.id in logged  # the key id is fine to log, and is


# --- expiry


async def test_expiry_is_checked_to_the_millisecond_even_when_cached(harness: Harness) -> None:
    expires_at = harness.clock() + 100
    token = await harness.key(expires_at=expires_at)
    harness.clock.set(expires_at - 0.001)
    assert (await harness.get(token)).status_code == 200
    assert (await harness.get(token)).status_code == 200  # served from the cache
    assert harness.hasher.verifies == 1
    harness.clock.set(expires_at + 0.001)
    assert (await harness.get(token)).status_code == 401
    assert harness.hasher.verifies == 1  # refused by the cache's own re-check


async def test_expired_key_is_refused_when_not_cached(make_harness: type[Harness]) -> None:
    harness = make_harness(cache_ttl=0)
    expires_at = harness.clock() + 100
    token = await harness.key(expires_at=expires_at)
    harness.clock.set(expires_at - 0.001)
    assert (await harness.get(token)).status_code == 200
    harness.clock.set(expires_at + 0.001)
    assert (await harness.get(token)).status_code == 401


# --- concurrency


MODERATE = Argon2Params(time_cost=2, memory_cost=8192, parallelism=1)
"""About 10 ms a verify: enough that verifications overlap and take real time."""


async def _hundred_keys(hasher: Hasher) -> tuple[MemoryKeyStore, list[bytes]]:
    store = MemoryKeyStore()
    manager = KeyManager(store, hasher=hasher)
    created = await asyncio.gather(*(manager.create_key(f"acct_{i}", "k") for i in range(100)))
    return store, [f"Bearer {token}".encode() for _, token in created]


async def test_concurrent_first_verifications_never_block_the_event_loop() -> None:
    hasher = CountingHasher(MODERATE)
    store, headers = await _hundred_keys(hasher)
    auth = Authenticator(store, hasher=hasher, verify_concurrency=1)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    principals = await asyncio.gather(*(auth.authenticate(h, "10.0.0.1") for h in headers))
    stop.set()
    await tick
    await auth.aclose()

    assert [p.account_id for p in principals] == [f"acct_{i}" for i in range(100)]
    assert hasher.verifies == 100
    assert hasher.peak == 1
    # argon2 ran in worker threads, never on the loop's; the loop went on meanwhile.
    assert threading.get_ident() not in hasher.threads
    assert ticks > 100


async def test_concurrent_first_verifications_never_exceed_the_semaphore() -> None:
    hasher = CountingHasher(MODERATE)
    store, headers = await _hundred_keys(hasher)
    auth = Authenticator(store, hasher=hasher, verify_concurrency=3)
    principals = await asyncio.gather(*(auth.authenticate(h, "10.0.0.1") for h in headers))
    assert len({p.key_id for p in principals}) == 100
    assert hasher.verifies == 100
    assert hasher.peak == 3  # as many as allowed, and never more (the thread pool has more)


async def test_concurrent_requests_with_one_token_verify_once(harness: Harness) -> None:
    token = await harness.key()
    harness.store.calls.clear()
    header = f"Bearer {token}".encode()
    principals = await asyncio.gather(*(harness.auth.authenticate(header, "10.0.0.1") for _ in range(20)))
    assert {p.key_id for p in principals} == {principals[0].key_id}
    assert harness.hasher.verifies == 1
    assert harness.store.calls["get_key"] == 1


# --- argon2 parameters


async def test_production_argon2_parameters_are_the_default() -> None:
    store = MemoryKeyStore()
    record, token = await KeyManager(store).create_key("acct_1", "prod")
    assert record.hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    principal = await Authenticator(store).authenticate(f"Bearer {token}".encode(), None)
    assert principal.key_id == record.id


async def test_a_key_hashed_with_old_parameters_is_rehashed_on_use() -> None:
    store = MemoryKeyStore()
    record, token = await KeyManager(store, hasher=Hasher(CHEAPEST)).create_key("acct_1", "old")
    current = Hasher(Argon2Params(time_cost=2, memory_cost=16, parallelism=1))
    assert current.needs_rehash(record.hash)

    auth = Authenticator(store, hasher=current)
    await auth.authenticate(f"Bearer {token}".encode(), None)
    await auth.aclose()

    upgraded = await store.get_key(record.kid)
    assert upgraded is not None
    assert upgraded.hash.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert not current.needs_rehash(upgraded.hash)
    fresh = Authenticator(store, hasher=current)
    assert (await fresh.authenticate(f"Bearer {token}".encode(), None)).key_id == record.id


# --- failed authentications


async def test_failures_from_one_address_lock_out_nothing_and_cost_no_argon2(make_harness: type[Harness]) -> None:
    harness = make_harness(failures_per_minute=3, cache_ttl=3600)  # a setting that no longer refuses
    attacker, bystander = "203.0.113.7", "198.51.100.2"
    cached = await harness.key("acct_a")
    other = await harness.key("acct_a")
    victim_key = await harness.key("acct_b")
    assert (await harness.call("GET", cached, address=attacker)).status_code == 200
    for _ in range(30):
        assert (await harness.call("GET", KeyFormat().generate().token, address=attacker)).status_code == 401
        assert (await harness.call("GET", b"Basic abc", address=attacker)).status_code == 401
    assert harness.hasher.verifies == 1  # unknown keys and garbage: no argon2

    assert (await harness.call("GET", other, address=attacker)).status_code == 200
    assert (await harness.call("GET", cached, address=attacker)).status_code == 200
    assert (await harness.call("GET", victim_key, address=bystander)).status_code == 200


# --- last_used_at


async def test_last_used_at_is_written_behind_at_most_once_a_minute_per_key(make_harness: type[Harness]) -> None:
    harness = make_harness(cache_ttl=5)
    record, token = await harness.manager.create_key("acct_1", "k")
    record2, token2 = await harness.manager.create_key("acct_1", "k2")
    t0 = harness.clock()
    for _ in range(5):
        assert (await harness.get(token)).status_code == 200
        harness.clock.advance(10)  # past the cache TTL: verified again each time
    assert (await harness.get(token2)).status_code == 200
    await harness.auth.aclose()
    # Five uses of one key over 40 s and one of another: one batched write, one time per key.
    assert harness.store.touched == [{record.kid: t0, record2.kid: t0 + 50}]

    harness.clock.advance(11)  # 61 s after the first write
    assert (await harness.get(token)).status_code == 200
    assert (await harness.get(token)).status_code == 200
    await harness.auth.aclose()
    assert len(harness.store.touched) == 2
    assert harness.store.touched[-1] == {record.kid: t0 + 61}
    stored = await harness.store.get_key(record.kid)
    assert stored.last_used_at == t0 + 61


async def test_last_use_tracking_forgets_keys_idle_for_two_minutes_without_a_pass(harness: Harness) -> None:
    old = [await harness.key() for _ in range(3)]
    t0 = harness.clock()
    for token in old:
        assert (await harness.get(token)).status_code == 200
    harness.clock.advance(61)
    recent = await harness.key()
    assert (await harness.get(recent)).status_code == 200  # a new generation begins
    harness.clock.advance(61)
    assert (await harness.get(recent)).status_code == 200  # and another: the first three are gone
    assert harness.auth.last_use.tracked() == {await _kid(recent)}
    await harness.auth.aclose()  # every use queued was written, the last with its latest time
    assert sorted(harness.store.touched[-1]) == sorted([await _kid(t) for t in [*old, recent]])
    assert harness.store.touched[-1][await _kid(recent)] == t0 + 122


async def _kid(token: str) -> str:
    parsed = KeyFormat().parse(token)
    assert parsed is not None
    return parsed.kid


async def test_last_used_writes_are_batched(harness: Harness) -> None:
    tokens = [await harness.key() for _ in range(3)]
    for token in tokens:
        assert (await harness.get(token)).status_code == 200
    await harness.auth.aclose()
    assert len(harness.store.touched) == 1
    assert sorted(harness.store.touched[0]) == sorted([await _kid(t) for t in tokens])


async def test_a_failing_last_used_write_is_dropped(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    token = await harness.key()
    assert (await harness.get(token)).status_code == 200
    harness.store.down = True
    await harness.auth.aclose()
    assert harness.store.calls["touch_keys"] == 1
    assert "could not record the last use of 1 keys" in caplog.text


# --- store down


async def test_store_down_cached_key_works_and_unseen_key_gets_503(harness: Harness) -> None:
    seen = await harness.key()
    unseen = await harness.key()
    assert (await harness.get(seen)).status_code == 200
    harness.store.down = True

    assert (await harness.get(seen)).status_code == 200
    response = await harness.get(unseen)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {
            "message": "The key store is unavailable. Try again shortly.",
            "type": "server_error",
            "param": None,
            "code": "service_unavailable",
        }
    }
    harness.clock.advance(5)  # the cache entry lapses: served stale while the store is down (issue 6)
    assert (await harness.get(seen)).status_code == 200
    harness.store.down = False
    assert (await harness.get(seen)).status_code == 200


async def test_revocation_and_plan_change_evict_at_once(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_1", "k")
    response = await harness.get(token)
    assert response.status_code == 200
    principal = await harness.auth.authenticate(f"Bearer {token}".encode(), None)
    assert principal.plan == "free"
    await harness.manager.set_plan("acct_1", "pro")
    assert (await harness.auth.authenticate(f"Bearer {token}".encode(), None)).plan == "pro"
    await harness.manager.revoke_key("acct_1", record.id)
    assert (await harness.get(token)).status_code == 401


def test_one_authenticator_serves_one_event_loop_after_another() -> None:
    # As when one app is served by two TestClients in turn: semaphores and tasks are per loop.
    store = MemoryKeyStore()
    hasher = CountingHasher()
    auth = Authenticator(store, hasher=hasher, verify_concurrency=1, cache_ttl=0)

    async def round_() -> list[str]:
        created = [await KeyManager(store, hasher=hasher).create_key("acct_1", "k") for _ in range(4)]
        found = await asyncio.gather(*(auth.authenticate(f"Bearer {t}".encode(), None) for _, t in created))
        return [p.key_id for p in found]

    assert len(asyncio.run(round_())) == 4
    assert len(asyncio.run(round_())) == 4
    assert hasher.verifies == 8
    assert hasher.peak == 1
