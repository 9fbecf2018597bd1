"""One contract for every key store: memory, SQLite, Redis and Redis Cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from keylimit import KeyStoreUnavailable
from keylimit._models import Account, KeyRecord, KeyStatus, KeyType, Limits, Scope
from keylimit.auth._hashing import CHEAPEST, Hasher
from keylimit.auth._keys import KeyFormat
from keylimit.stores import KeyStore, StoreEvent
from keylimit.stores.memory import MemoryKeyStore
from keylimit.stores.redis import RedisKeyStore
from keylimit.stores.sqlite import SQLiteKeyStore
from tests._redis import RedisServer

KINDS = ["memory", "sqlite", "redis", "cluster"]
T0 = 1_700_000_000.0


def make_record(kid: str, account_id: str = "acct_a", created_at: float = T0, **changes: object) -> KeyRecord:
    record = KeyRecord(
        kid=kid,
        account_id=account_id,
        name=f"name of {kid}",
        key_type=KeyType.SDK,
        scopes=(Scope.FULL,),
        hash=f"$argon2id$v=19$m=8,t=1,p=1${kid}",
        hint=f"forii_sk_{kid}\u2026abcd",
        created_at=created_at,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> KeyStore:
    if kind == "memory":
        return MemoryKeyStore()
    if kind == "sqlite":
        return SQLiteKeyStore.from_url(f"sqlite:///{tmp_path}/keys.db")
    if kind == "redis":
        return RedisKeyStore.from_url(request.getfixturevalue("redis_url"))
    return RedisKeyStore.from_url(request.getfixturevalue("cluster_url"))


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    store = open_store(request.param, request, tmp_path)
    yield store
    await store.aclose()


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        # the defaults: an active SDK key that never expires and was never used
        make_record("AAAAAAAAAAA1"),
        # every optional field set, fractional times, several scopes, unicode name
        make_record(
            "AAAAAAAAAAA2",
            name="prod api \u00e9\u4e2d",
            key_type=KeyType.API,
            scopes=(Scope.INFERENCE, Scope.READ),
            created_at=T0 + 0.123456,
            status=KeyStatus.REVOKED,
            expires_at=T0 + 86_400.5,
            revoked_at=T0 + 60.25,
            last_used_at=T0 + 30.000001,
            check="0a1bc2d3",
        ),
    ],
)
async def test_add_then_get_returns_every_field(store: KeyStore, record: KeyRecord) -> None:
    await store.add_key(record)
    assert await store.get_key(record.kid) == record


async def test_unknown_kid_is_none(store: KeyStore) -> None:
    assert await store.get_key("ZZZZZZZZZZZZ") is None


async def test_adding_a_taken_kid_is_refused(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))
    with pytest.raises(ValueError, match="already exists"):
        await store.add_key(make_record("AAAAAAAAAAA1", account_id="acct_b", name="other"))
    assert (await store.get_key("AAAAAAAAAAA1")) == make_record("AAAAAAAAAAA1")


async def test_list_is_oldest_first_and_per_account(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA3", created_at=T0 + 3))
    await store.add_key(make_record("AAAAAAAAAAA1", created_at=T0 + 1))
    await store.add_key(make_record("BBBBBBBBBBB1", account_id="acct_b", created_at=T0 + 2))
    await store.add_key(make_record("AAAAAAAAAAA2", created_at=T0 + 2))
    await store.revoke_key("acct_a", "AAAAAAAAAAA2", T0 + 10)

    listed = await store.list_keys("acct_a")
    assert [r.kid for r in listed] == ["AAAAAAAAAAA1", "AAAAAAAAAAA2", "AAAAAAAAAAA3"]
    assert listed[1].status is KeyStatus.REVOKED
    assert [r.kid for r in await store.list_keys("acct_b")] == ["BBBBBBBBBBB1"]
    assert await store.list_keys("acct_nobody") == []


async def test_revoke_is_idempotent_and_keeps_the_first_time(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))

    first = await store.revoke_key("acct_a", "AAAAAAAAAAA1", T0 + 10)
    again = await store.revoke_key("acct_a", "AAAAAAAAAAA1", T0 + 20)

    expected = make_record("AAAAAAAAAAA1", status=KeyStatus.REVOKED, revoked_at=T0 + 10)
    assert first == expected
    assert again == expected
    assert await store.get_key("AAAAAAAAAAA1") == expected


async def test_revoke_through_another_account_is_none_and_changes_nothing(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))

    assert await store.revoke_key("acct_b", "AAAAAAAAAAA1", T0 + 10) is None
    assert await store.revoke_key("acct_a", "ZZZZZZZZZZZZ", T0 + 10) is None
    assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")
    assert await store.get_key("ZZZZZZZZZZZZ") is None


async def test_set_hash_replaces_the_hash_only(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))

    await store.set_hash("AAAAAAAAAAA1", "$argon2id$v=19$m=65536,t=3,p=4$new")
    await store.set_hash("ZZZZZZZZZZZZ", "$argon2id$v=19$m=65536,t=3,p=4$other")

    got = await store.get_key("AAAAAAAAAAA1")
    assert got == make_record("AAAAAAAAAAA1", hash="$argon2id$v=19$m=65536,t=3,p=4$new")
    assert await store.get_key("ZZZZZZZZZZZZ") is None


async def test_set_check_writes_the_check_only(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))  # created before check values: none
    assert (await store.get_key("AAAAAAAAAAA1")) == make_record("AAAAAAAAAAA1", check=None)

    await store.set_check("AAAAAAAAAAA1", "9f8e7d6c")
    await store.set_check("ZZZZZZZZZZZZ", "00000000")

    assert (await store.get_key("AAAAAAAAAAA1")) == make_record("AAAAAAAAAAA1", check="9f8e7d6c")
    assert await store.get_key("ZZZZZZZZZZZZ") is None
    assert [r.check for r in await store.list_keys("acct_a")] == ["9f8e7d6c"]


async def test_touch_keys_writes_last_used_for_each(store: KeyStore) -> None:
    await store.add_key(make_record("AAAAAAAAAAA1"))
    await store.add_key(make_record("BBBBBBBBBBB1", account_id="acct_b"))

    await store.touch_keys({"AAAAAAAAAAA1": T0 + 61.5, "BBBBBBBBBBB1": T0 + 62.0, "ZZZZZZZZZZZZ": T0})
    await store.touch_keys({})

    assert (await store.get_key("AAAAAAAAAAA1")) == make_record("AAAAAAAAAAA1", last_used_at=T0 + 61.5)
    assert (await store.get_key("BBBBBBBBBBB1")) == make_record(
        "BBBBBBBBBBB1", account_id="acct_b", last_used_at=T0 + 62.0
    )
    assert await store.get_key("ZZZZZZZZZZZZ") is None


# -- accounts --------------------------------------------------------------------------------


async def test_add_key_creates_the_account_with_the_default_plan(store: KeyStore) -> None:
    assert await store.get_account("acct_a") is None
    await store.add_key(make_record("AAAAAAAAAAA1"))
    assert await store.get_account("acct_a") == Account("acct_a", "free", None)


async def test_add_key_keeps_an_existing_accounts_plan(store: KeyStore) -> None:
    await store.put_account(Account("acct_a", "pro"))
    await store.add_key(make_record("AAAAAAAAAAA1"))
    assert await store.get_account("acct_a") == Account("acct_a", "pro", None)


async def test_put_account_creates_and_replaces(store: KeyStore) -> None:
    custom = Account("acct_a", "enterprise", Limits(requests=7, prompt_tokens=0, completion_tokens=12_345_678))
    await store.put_account(custom)
    assert await store.get_account("acct_a") == custom

    await store.put_account(Account("acct_a", "starter"))
    assert await store.get_account("acct_a") == Account("acct_a", "starter", None)
    assert await store.get_account("acct_b") is None


# -- listeners -------------------------------------------------------------------------------


async def test_listeners_hear_of_revocations_and_plan_changes(store: KeyStore) -> None:
    heard: list[StoreEvent] = []
    store.subscribe(heard.append)
    await store.add_key(make_record("AAAAAAAAAAA1"))
    assert heard == []

    await store.revoke_key("acct_a", "AAAAAAAAAAA1", T0 + 1)
    await store.revoke_key("acct_b", "AAAAAAAAAAA1", T0 + 1)  # not that account's key: no change
    await store.put_account(Account("acct_a", "pro"))

    assert heard == [StoreEvent("key", "AAAAAAAAAAA1"), StoreEvent("account", "acct_a")]


async def test_start_and_aclose_are_idempotent(store: KeyStore) -> None:
    await store.start()
    await store.start()
    await store.add_key(make_record("AAAAAAAAAAA1"))
    await store.aclose()
    await store.aclose()


# -- at rest ---------------------------------------------------------------------------------


def stored_strings(kind: str, url: str, path: Path) -> list[str]:
    """Every value the storage holds, read around the store."""
    if kind == "sqlite":
        with sqlite3.connect(path) as conn:
            rows = [*conn.execute("SELECT * FROM keys"), *conn.execute("SELECT * FROM accounts")]
        return [str(v) for row in rows for v in row]
    nodes = redis_nodes(kind, url)
    out: list[str] = []
    for node in nodes:
        for key in node.scan_iter():
            kind_of = node.type(key)
            if kind_of == b"hash":
                out += [_text(v) for v in node.hgetall(key).values()]
            elif kind_of == b"set":
                out += [_text(v) for v in node.smembers(key)]
    return out


def redis_nodes(kind: str, url: str) -> list[redis.Redis]:
    if kind == "redis":
        return [redis.Redis.from_url(url)]
    cluster = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
    return [redis.Redis(host=n.host, port=n.port) for n in cluster.get_nodes()]  # type: ignore[no-untyped-call]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
async def test_only_the_argon2_hash_is_stored(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = open_store(kind, request, tmp_path)
    key_format, hasher = KeyFormat(), Hasher(CHEAPEST)
    parsed = key_format.generate(KeyType.SDK)
    record = make_record(parsed.kid, hash=hasher.hash(parsed.token))
    try:
        await store.add_key(record)
    finally:
        await store.aclose()

    url = "" if kind == "sqlite" else store.url  # type: ignore[attr-defined]
    stored = stored_strings(kind, url, tmp_path / "keys.db")
    assert any(v.startswith("$argon2id$") for v in stored)
    assert parsed.kid in stored
    assert not [v for v in stored if parsed.token in v or parsed.token[-36:-6] in v]


# -- many processes --------------------------------------------------------------------------


async def test_two_sqlite_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    server, cli = SQLiteKeyStore.from_url(url), SQLiteKeyStore.from_url(url)
    try:
        assert await server.get_key("AAAAAAAAAAA1") is None  # the server has the file open first
        await cli.add_key(make_record("AAAAAAAAAAA1"))
        assert await server.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")

        await server.revoke_key("acct_a", "AAAAAAAAAAA1", T0 + 5)
        await server.put_account(Account("acct_a", "pro"))
        assert (await cli.get_key("AAAAAAAAAAA1")) == make_record(
            "AAAAAAAAAAA1", status=KeyStatus.REVOKED, revoked_at=T0 + 5
        )
        assert await cli.get_account("acct_a") == Account("acct_a", "pro")
    finally:
        await server.aclose()
        await cli.aclose()


def event_waiter(wanted: StoreEvent) -> tuple[Callable[[StoreEvent], None], asyncio.Event]:
    arrived = asyncio.Event()

    def listener(event: StoreEvent) -> None:
        if event == wanted:
            arrived.set()

    return listener, arrived


@pytest.mark.parametrize("fixture", ["redis_url", "cluster_url"])
async def test_a_revocation_reaches_another_redis_store(fixture: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(fixture)
    admin, server = RedisKeyStore.from_url(url), RedisKeyStore.from_url(url)
    revoked, revoked_arrived = event_waiter(StoreEvent("key", "AAAAAAAAAAA1"))
    plan, plan_arrived = event_waiter(StoreEvent("account", "acct_a"))
    server.subscribe(revoked)
    server.subscribe(plan)
    try:
        await server.start()
        await asyncio.wait_for(server._live.wait(), 10)
        await admin.add_key(make_record("AAAAAAAAAAA1"))

        await admin.revoke_key("acct_a", "AAAAAAAAAAA1", T0 + 1)
        await asyncio.wait_for(revoked_arrived.wait(), 1)
        await admin.put_account(Account("acct_a", "pro"))
        await asyncio.wait_for(plan_arrived.wait(), 1)
    finally:
        await admin.aclose()
        await server.aclose()


# -- failures --------------------------------------------------------------------------------


async def test_a_stopped_redis_is_unavailable_then_recovers(tmp_path: Path) -> None:
    private = RedisServer(workdir=tmp_path).start()
    store, admin = RedisKeyStore.from_url(private.url), RedisKeyStore.from_url(private.url)
    revoked, revoked_arrived = event_waiter(StoreEvent("key", "AAAAAAAAAAA2"))
    store.subscribe(revoked)
    try:
        await store.start()
        await asyncio.wait_for(store._live.wait(), 10)
        await store.add_key(make_record("AAAAAAAAAAA1"))

        private.stop()
        with pytest.raises(KeyStoreUnavailable):
            await store.get_key("AAAAAAAAAAA1")
        with pytest.raises(KeyStoreUnavailable):
            await store.revoke_key("acct_a", "AAAAAAAAAAA1", T0)
        await asyncio.wait_for(store._lost.wait(), 10)

        private.start()  # same port, empty: nothing was saved
        assert await store.get_key("AAAAAAAAAAA1") is None
        await store.add_key(make_record("AAAAAAAAAAA1"))
        assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")

        await asyncio.wait_for(store._live.wait(), 10)
        await admin.add_key(make_record("AAAAAAAAAAA2"))
        await admin.revoke_key("acct_a", "AAAAAAAAAAA2", T0 + 1)
        await asyncio.wait_for(revoked_arrived.wait(), 1)
    finally:
        await store.aclose()
        await admin.aclose()
        private.stop()
