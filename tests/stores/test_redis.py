"""What only the Redis store does: key layout, secrets kept out of errors, a robust subscriber."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from keylimit import KeyStoreUnavailable
from keylimit._models import Account
from keylimit.stores import StoreEvent, open_key_store
from keylimit.stores._channel import CHANNEL
from keylimit.stores.redis import RedisKeyStore
from tests._redis import free_port
from tests.stores.test_contract import T0, event_waiter, make_record


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("rediss://app:hunter2@cache.internal:6380/1", "rediss://app:***@cache.internal:6380/1"),
        ("redis+cluster://:hunter2@127.0.0.1:7000", "redis+cluster://***@127.0.0.1:7000"),
    ],
)
def test_repr_hides_the_password(url: str, shown: str) -> None:
    store = open_key_store(url)
    assert isinstance(store, RedisKeyStore)
    assert repr(store) == f"RedisKeyStore(url={shown!r})"


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_unreachable_redis_is_unavailable_without_the_password(scheme: str) -> None:
    store = RedisKeyStore.from_url(f"{scheme}://:hunter2@127.0.0.1:{free_port()}")
    try:
        for call in (
            store.get_key("AAAAAAAAAAA1"),
            store.add_key(make_record("AAAAAAAAAAA1")),
            store.list_keys("acct_a"),
            store.revoke_key("acct_a", "AAAAAAAAAAA1", T0),
            store.touch_keys({"AAAAAAAAAAA1": T0}),
            store.put_account(Account("acct_a")),
        ):
            with pytest.raises(KeyStoreUnavailable) as caught:
                await call
            assert "hunter2" not in str(caught.value)
            assert "***@127.0.0.1" in str(caught.value)
    finally:
        await store.aclose()


async def test_layout_keeps_each_account_in_one_slot(cluster_url: str) -> None:
    store = RedisKeyStore.from_url(cluster_url)
    try:
        await store.add_key(make_record("AAAAAAAAAAA1"))
        await store.put_account(Account("acct_a", "pro"))
    finally:
        await store.aclose()
    client = redis.RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    assert client.hget("kl:key:{AAAAAAAAAAA1}", "account_id") == b"acct_a"
    assert client.smembers("kl:account:{acct_a}:keys") == {b"AAAAAAAAAAA1"}
    assert client.hgetall("kl:account:{acct_a}") == {b"id": b"acct_a", b"plan": b"pro"}
    assert client.keyslot("kl:account:{acct_a}") == client.keyslot("kl:account:{acct_a}:keys")  # type: ignore[no-untyped-call]


async def test_a_malformed_hash_is_unavailable_not_a_crash(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).hset("kl:key:{AAAAAAAAAAA1}", mapping={"kid": "AAAAAAAAAAA1", "status": "?"})
    store = RedisKeyStore.from_url(redis_url)
    try:
        with pytest.raises(KeyStoreUnavailable, match="key_AAAAAAAAAAA1"):
            await store.get_key("AAAAAAAAAAA1")
    finally:
        await store.aclose()


async def test_the_subscriber_survives_garbage_and_failing_listeners(redis_url: str) -> None:
    store = RedisKeyStore.from_url(redis_url)
    wanted, arrived = event_waiter(StoreEvent("account", "acct_b"))

    def broken(event: StoreEvent) -> None:
        if event.id == "acct_a":
            raise RuntimeError("listener bug")

    store.subscribe(broken)
    store.subscribe(wanted)
    publisher = redis.Redis.from_url(redis_url)
    try:
        await store.start()
        await asyncio.wait_for(store._live.wait(), 10)
        for garbage in (b"not json", b"[]", b'{"kind": "key"}', b'{"kind": "nope", "id": "x"}', b'{"id": 5}'):
            publisher.publish(CHANNEL, garbage)
        publisher.publish(CHANNEL, json.dumps({"kind": "account", "id": "acct_a", "origin": "elsewhere"}))
        publisher.publish(CHANNEL, json.dumps({"kind": "account", "id": "acct_b", "origin": "elsewhere"}))
        await asyncio.wait_for(arrived.wait(), 1)
        assert store._live.is_set()
    finally:
        await store.aclose()
