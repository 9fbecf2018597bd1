"""Two app instances sharing one Redis: a revocation or a plan change made through one reaches
the other's cache within a second."""

from __future__ import annotations

import asyncio

import pytest

from keylimit import KeyManager, StoreEvent, open_key_store
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST, Hasher
from keylimit.auth._middleware import KeyAuthMiddleware
from keylimit.stores.redis import RedisKeyStore

from .conftest import Harness, inner_app

pytestmark = pytest.mark.redis


class Instance:
    """One process's worth: its own store connection, Authenticator and middleware."""

    def __init__(self, url: str) -> None:
        store = open_key_store(url)
        assert isinstance(store, RedisKeyStore)
        self.store = store
        self.manager = KeyManager(store, hasher=Hasher(CHEAPEST))
        self.auth = Authenticator(store, hasher=Hasher(CHEAPEST), cache_ttl=3600)
        self.harness = Harness()
        self.harness.app = KeyAuthMiddleware(inner_app(), authenticator=self.auth)

    async def status(self, token: str) -> int:
        return (await self.harness.get(token)).status_code

    def heard(self, event: StoreEvent) -> asyncio.Event:
        got = asyncio.Event()
        self.store.subscribe(lambda e: got.set() if e == event else None)
        return got

    async def aclose(self) -> None:
        await self.auth.aclose()
        await self.store.aclose()


@pytest.mark.parametrize("fixture", ["redis_url", pytest.param("cluster_url", marks=pytest.mark.cluster)])
async def test_revocation_through_one_instance_reaches_the_other_within_a_second(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    url = request.getfixturevalue(fixture)
    a, b = Instance(url), Instance(url)
    try:
        record, token = await a.manager.create_key("acct_1", "shared")
        assert await a.status(token) == 200
        assert await b.status(token) == 200  # now in b's cache, for an hour
        await asyncio.wait_for(b.store._live.wait(), timeout=5)  # b is subscribed
        plan_changed = b.heard(StoreEvent("account", "acct_1"))
        revoked = b.heard(StoreEvent("key", record.kid))

        await a.manager.set_plan("acct_1", "pro")
        await asyncio.wait_for(plan_changed.wait(), timeout=1.0)
        assert (await b.auth.authenticate(f"Bearer {token}".encode(), None)).plan == "pro"

        await a.manager.revoke_key("acct_1", record.id)
        assert await a.status(token) == 401  # at once in the revoking instance
        await asyncio.wait_for(revoked.wait(), timeout=1.0)
        assert await b.status(token) == 401
    finally:
        await a.aclose()
        await b.aclose()
