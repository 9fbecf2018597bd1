"""A cache entry past its TTL is revalidated against the store, not verified with argon2 again."""

from __future__ import annotations

import pytest

from keylimit import InvalidKey, KeyManager, Limits, ManualClock
from keylimit.auth._authenticator import Authenticator
from keylimit.stores.memory import MemoryKeyStore
from tests.auth.conftest import CountingHasher, SpyStore


async def setup(ttl: float = 5.0) -> tuple[Authenticator, KeyManager, SpyStore, CountingHasher, ManualClock, bytes]:
    clock = ManualClock()
    hasher = CountingHasher()
    store = SpyStore(MemoryKeyStore())
    manager = KeyManager(store, hasher=hasher, clock=clock)
    _, token = await manager.create_key("acme", "k")
    auth = Authenticator(store, hasher=hasher, clock=clock, cache_ttl=ttl)
    return auth, manager, store, hasher, clock, b"Bearer " + token.encode()


async def test_a_lapsed_entry_is_revalidated_without_argon2() -> None:
    auth, _, store, hasher, clock, header = await setup()
    await auth.authenticate(header, "10.0.0.1")
    assert hasher.verifies == 1
    lookups = store.calls["get_key"]
    await auth.authenticate(header, "10.0.0.1")  # fresh: no store, no argon2
    assert (hasher.verifies, store.calls["get_key"]) == (1, lookups)
    clock.advance(5.001)
    await auth.authenticate(header, "10.0.0.1")  # lapsed: one lookup, still no argon2
    assert (hasher.verifies, store.calls["get_key"]) == (1, lookups + 1)
    await auth.authenticate(header, "10.0.0.1")  # fresh again
    assert store.calls["get_key"] == lookups + 1


async def test_revalidation_sees_a_revocation_and_a_plan_change() -> None:
    auth, manager, store, hasher, clock, header = await setup()
    principal = await auth.authenticate(header, "10.0.0.1")
    await store.inner.put_account(type(await manager.get_account("acme"))("acme", "pro", None))
    clock.advance(5.001)
    assert (await auth.authenticate(header, "10.0.0.1")).plan == "pro"
    record = (await manager.list_keys("acme"))[0]
    await store.inner.revoke_key("acme", record.kid, clock())
    assert principal.plan == "free"
    with pytest.raises(InvalidKey):
        await auth.authenticate(header, "10.0.0.1")
    assert hasher.verifies == 1


async def test_a_changed_hash_is_verified_again() -> None:
    auth, manager, store, hasher, clock, header = await setup()
    await auth.authenticate(header, "10.0.0.1")
    record = (await manager.list_keys("acme"))[0]
    await store.inner.set_hash(record.kid, hasher.hash(header[len(b"Bearer ") :].decode()))
    clock.advance(5.001)
    await auth.authenticate(header, "10.0.0.1")
    assert hasher.verifies == 2


async def test_custom_limits_travel_with_revalidation() -> None:
    auth, manager, store, _, clock, header = await setup()
    await auth.authenticate(header, "10.0.0.1")
    await store.inner.put_account(type(await manager.get_account("acme"))("acme", "enterprise", Limits(7, 8, 9)))
    clock.advance(5.001)
    assert (await auth.authenticate(header, "10.0.0.1")).limits == Limits(7, 8, 9)


async def test_a_plan_change_costs_no_argon2_and_a_revocation_reaches_every_spelling() -> None:
    auth, manager, _, hasher, _, header = await setup()
    other_spelling = b"bearer" + header[len(b"Bearer") :]
    await auth.authenticate(header, "10.0.0.1")
    await auth.authenticate(other_spelling, "10.0.0.1")
    assert hasher.verifies == 2
    await manager.set_plan("acme", "pro")  # evicts the account's entries through the store event
    assert (await auth.authenticate(header, "10.0.0.1")).plan == "pro"
    assert (await auth.authenticate(other_spelling, "10.0.0.1")).plan == "pro"
    assert hasher.verifies == 2
    record = (await manager.list_keys("acme"))[0]
    await manager.revoke_key("acme", record.id)
    for spelling in (header, other_spelling):
        with pytest.raises(InvalidKey):
            await auth.authenticate(spelling, "10.0.0.1")
