"""Stale-if-error (issue 6): while the key store is down, keys already verified keep working
past their cache TTL; a key whose revocation was announced, an expired key and a key never
verified do not."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from keylimit import InvalidKey, KeyStoreUnavailable
from keylimit.auth._authenticator import Authenticator
from keylimit.stores import StoreEvent
from tests.auth.conftest import Harness, SpyStore

pytestmark = pytest.mark.filterwarnings("error")

TTL = 5.0


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


@pytest.fixture
def harness() -> Harness:
    return Harness(cache_ttl=TTL)


async def test_a_verified_key_keeps_working_past_its_ttl_while_the_store_is_down(harness: Harness) -> None:
    token = await harness.key()
    assert (await harness.get(token)).status_code == 200
    harness.store.down = True
    for _ in range(4):
        harness.clock.advance(TTL + 1)  # every request finds its entry lapsed
        response = await harness.get(token)
        assert response.status_code == 200
        assert response.json()["account"] == "acct_1"
    assert harness.hasher.verifies == 1


async def test_a_key_never_verified_gets_503_not_401_while_the_store_is_down(harness: Harness) -> None:
    seen, unseen = await harness.key(), await harness.key()
    assert (await harness.get(seen)).status_code == 200
    harness.store.down = True
    wrong_secret = seen[:-10] + ("A" if seen[-10] != "A" else "B") + seen[-9:]  # bad checksum: refused unread
    responses = [await harness.get(unseen), await harness.get(unseen, address="10.0.0.2")]
    assert [r.status_code for r in responses] == [503, 503]
    assert responses[0].json()["error"]["code"] == "service_unavailable"
    assert responses[0].headers["retry-after"] == "1"
    assert (await harness.get(wrong_secret)).status_code == 401  # not a well-formed key: no store needed
    assert (await harness.get(seen)).status_code == 200


async def test_the_store_is_asked_at_most_once_per_ttl_while_it_is_down(harness: Harness) -> None:
    token = await harness.key()
    await harness.auth.authenticate(bearer(token), None)
    harness.store.down = True
    before = harness.store.calls["get_key"]
    harness.clock.advance(TTL + 1)
    for _ in range(20):
        await harness.auth.authenticate(bearer(token), None)
        harness.clock.advance(0.1)
    assert harness.store.calls["get_key"] == before + 1  # renewed for a TTL after the failed revalidation
    harness.clock.advance(TTL)
    await harness.auth.authenticate(bearer(token), None)
    assert harness.store.calls["get_key"] == before + 2


async def test_after_recovery_the_next_lapse_revalidates_and_sees_a_plan_change(harness: Harness) -> None:
    token = await harness.key()
    await harness.auth.authenticate(bearer(token), None)
    harness.store.down = True
    harness.clock.advance(TTL + 1)
    assert (await harness.auth.authenticate(bearer(token), None)).plan == "free"
    harness.store.down = False
    # Changed behind this process's back (no event reaches its cache), as from a process
    # whose announcement was lost during the outage.
    harness.store.inner._accounts["acct_1"] = type(harness.store.inner._accounts["acct_1"])("acct_1", "pro")
    harness.clock.advance(TTL + 1)
    assert (await harness.auth.authenticate(bearer(token), None)).plan == "pro"


async def test_a_revoked_key_is_never_served_stale(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_1", "k")
    keep = await harness.key()
    for t in (token, keep):
        assert (await harness.get(t)).status_code == 200
    await harness.manager.revoke_key("acct_1", record.id)  # announced: its entry is dropped
    harness.store.down = True
    assert (await harness.get(token)).status_code == 503  # the store cannot say why: 503, never 200
    harness.clock.advance(TTL + 1)
    assert (await harness.get(token)).status_code == 503
    assert (await harness.get(keep)).status_code == 200
    harness.store.down = False
    assert (await harness.get(token)).status_code == 401


async def test_a_revocation_from_another_process_during_the_outage_is_never_served_stale(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_1", "k")
    await harness.auth.authenticate(bearer(token), None)
    harness.store.down = True
    harness.clock.advance(TTL + 1)
    await harness.auth.authenticate(bearer(token), None)  # served stale, renewed
    harness.auth._on_event(StoreEvent("key", record.kid))  # as a pub/sub message would deliver it
    with pytest.raises(KeyStoreUnavailable):
        await harness.auth.authenticate(bearer(token), None)


class GatedStore(SpyStore):
    """get_key waits for ``gate``, then fails: a revalidation that is in flight for a while."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def get_key(self, kid: str) -> Any:
        self.waiting.set()
        await self.gate.wait()
        raise KeyStoreUnavailable("the test key store is down")


async def test_a_revocation_announced_during_a_failing_revalidation_wins() -> None:
    harness = Harness(cache_ttl=TTL)
    record, token = await harness.manager.create_key("acct_1", "k")
    await harness.auth.authenticate(bearer(token), None)
    gated = GatedStore(harness.store)
    auth = Authenticator(gated, hasher=harness.hasher, clock=harness.clock, cache_ttl=TTL)
    auth._cache = harness.auth._cache  # the entry verified above
    harness.clock.advance(TTL + 1)
    pending = asyncio.ensure_future(auth.authenticate(bearer(token), None))
    await gated.waiting.wait()
    auth.evict_key(record.kid)  # the revocation's event arrives while the store call hangs
    gated.gate.set()
    with pytest.raises(KeyStoreUnavailable):
        await pending


async def test_a_key_past_its_own_expiry_is_refused_even_while_the_store_is_down(harness: Harness) -> None:
    expires = harness.clock() + 3 * TTL
    _, token = await harness.manager.create_key("acct_1", "k", expires_at=expires)
    await harness.auth.authenticate(bearer(token), None)
    harness.store.down = True
    harness.clock.advance(TTL + 1)
    await harness.auth.authenticate(bearer(token), None)  # stale, renewed up to the expiry at most
    harness.clock.set(expires - 0.5)
    await harness.auth.authenticate(bearer(token), None)
    harness.clock.set(expires)
    assert (await harness.get(token)).status_code == 401  # the cached record says expired: no store needed
    # The entry is gone now; the store alone could say more, and it is down.
    assert (await harness.get(token)).status_code == 503
    harness.store.down = False
    with pytest.raises(InvalidKey):
        await harness.auth.authenticate(bearer(token), None)


async def test_a_plan_change_still_lapses_entries_without_argon2(harness: Harness) -> None:
    token = await harness.key()
    await harness.auth.authenticate(bearer(token), None)
    await harness.manager.set_plan("acct_1", "pro")
    assert (await harness.auth.authenticate(bearer(token), None)).plan == "pro"
    assert harness.hasher.verifies == 1


async def test_the_outage_is_logged_once_without_key_material(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [await harness.key() for _ in range(3)]
    unseen = await harness.key()
    for token in tokens:
        await harness.auth.authenticate(bearer(token), None)
    caplog.set_level(logging.DEBUG, logger="keylimit")

    async def outage() -> None:
        harness.store.down = True
        harness.clock.advance(TTL + 1)
        for _ in range(3):
            for token in tokens:
                await harness.auth.authenticate(bearer(token), None)
            with pytest.raises(KeyStoreUnavailable):
                await harness.auth.authenticate(bearer(unseen), None)
        harness.store.down = False
        harness.clock.advance(TTL + 1)
        for token in tokens:
            await harness.auth.authenticate(bearer(token), None)

    await outage()
    await outage()
    auth_records = [r for r in caplog.records if r.name == "keylimit.auth" and r.levelno >= logging.INFO]
    messages = [r.getMessage() for r in auth_records]
    assert [m.split(" (")[0].split(":")[0] for m in messages] == [
        "the key store is unavailable",
        "the key store answers again",
    ] * 2
    assert all(r.levelno == logging.WARNING for r in auth_records[::2])
    for token in [*tokens, unseen]:
        secret = token[-38:-6]
        assert not any(secret[i : i + 8] in caplog.text for i in range(0, len(secret) - 7))
