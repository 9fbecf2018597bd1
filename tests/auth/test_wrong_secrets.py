"""Failed authentications cost the sender, never a valid key: garbage and wrong secrets, however
many and from wherever, lock nothing out; a wrong secret is refused by the key's check value
without argon2; a key stored before check values existed still verifies and gains one."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from keylimit import InvalidKey, KeyFormat, KeyManager
from keylimit._models import KeyType
from keylimit.auth._hashing import key_check
from keylimit.stores.memory import MemoryKeyStore
from tests.abuse._keys import forged

from .conftest import CountingHasher, Harness, MakeHarness

ATTACKER, BYSTANDER = "203.0.113.7", "198.51.100.2"


def garbage(token: str) -> list[bytes]:
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")  # checksum fails
    return [
        f"Bearer {flipped}".encode(),
        f"Bearer {token[:-7]}".encode(),  # too short
        b"Bearer forii_sk_nope",
        b"Basic dXNlcjpwYXNz",
        b"Bearer " + b"x" * 400,  # over the header cap
        b"Bearer",
    ]


async def test_a_flood_of_wrong_secrets_and_garbage_locks_out_no_key(make_harness: MakeHarness) -> None:
    harness = make_harness(cache_ttl=3600)
    cached = await harness.key("acct_a")
    assert (await harness.call("GET", cached, address=BYSTANDER)).status_code == 200
    cold_sdk = await harness.key("acct_a", key_type=KeyType.SDK)
    cold_api = await harness.key("acct_b", key_type=KeyType.API)
    cold_elsewhere = await harness.key("acct_c")
    verifies, lookups = harness.hasher.verifies, harness.store.calls["get_key"]

    wrong = [forged(t) for t in (cached, cold_sdk, cold_api, cold_elsewhere) for _ in range(50)]
    unknown = [KeyFormat().generate(t).token for t in (KeyType.SDK, KeyType.API) for _ in range(25)]
    junk = [g for t in (cached, cold_sdk, cold_api) for g in garbage(t)] * 10
    for token in [*wrong, *unknown]:
        refused = await harness.call("GET", token, address=ATTACKER)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    for header in junk:
        assert (await harness.call("GET", header, address=ATTACKER)).status_code == 401

    assert harness.hasher.verifies == verifies  # no wrong secret reached argon2
    assert harness.store.calls["get_key"] == lookups + len(wrong) + len(unknown)  # garbage cost no lookup

    # Every valid key works, from the flooding address and from any other, cached or cold.
    for token, address in ((cold_sdk, ATTACKER), (cold_api, ATTACKER), (cached, ATTACKER), (cold_elsewhere, BYSTANDER)):
        assert (await harness.call("GET", token, address=address)).status_code == 200
    assert harness.hasher.verifies == verifies + 3  # the three cold keys, once each
    # and a missing key is still 401, not a refusal of the address
    assert (await harness.call("GET", None, address=ATTACKER)).json()["error"]["code"] == "missing_api_key"


async def test_the_check_value_only_refuses_argon2_still_decides(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_a", "k")
    intruder = forged(token)
    await harness.store.inner.set_check(record.kid, key_check(intruder))  # a check that lets it past

    assert (await harness.get(intruder)).status_code == 401
    assert harness.hasher.verifies == 1  # past the check, argon2 refused it


async def _legacy(harness: Harness, key_type: KeyType = KeyType.SDK) -> tuple[str, str]:
    """A key stored before check values existed: its record has none. (kid, token)"""
    made = KeyManager(MemoryKeyStore(), hasher=harness.hasher, clock=harness.clock)
    record, token = await made.create_key("acct_old", "legacy", key_type=key_type)
    assert record.check == key_check(token)
    await harness.store.inner.add_key(dataclasses.replace(record, check=None))
    return record.kid, token


async def test_a_legacy_key_without_a_check_verifies_with_argon2_and_gains_one(make_harness: MakeHarness) -> None:
    harness = make_harness(cache_ttl=3600)
    kid, token = await _legacy(harness)
    wrong = forged(token)
    assert (await harness.get(wrong)).status_code == 401
    assert harness.hasher.verifies == 1  # no check to refuse it: argon2 did

    assert (await harness.get(token, address=ATTACKER)).status_code == 200
    await harness.auth.aclose()  # the check is written behind
    stored = await harness.store.inner.get_key(kid)
    assert stored is not None
    assert stored.check == key_check(token)

    assert (await harness.get(forged(token))).status_code == 401
    assert harness.hasher.verifies == 2  # now the check refuses wrong secrets without argon2
    fresh = make_harness(store=harness.store.inner)
    assert (await fresh.get(token)).status_code == 200


async def test_a_wrong_secret_flood_on_a_legacy_key_stays_within_the_semaphore(make_harness: MakeHarness) -> None:
    harness = make_harness(verify_concurrency=2, cache_ttl=3600)
    _, token = await _legacy(harness, KeyType.API)
    await harness.auth.start()
    headers = [f"Bearer {forged(token)}".encode() for _ in range(40)]

    async def attempt(header: bytes) -> str:
        try:
            await harness.auth.authenticate(header, ATTACKER)
        except Exception as exc:
            return type(exc).__name__
        return "ok"

    results = await asyncio.gather(*(attempt(h) for h in headers), attempt(f"Bearer {token}".encode()))
    assert results == ["InvalidKey"] * 40 + ["ok"]
    assert harness.hasher.peak <= 2


async def test_the_check_value_is_never_shown(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_a", "k", key_type=KeyType.API)
    stored = await harness.store.inner.get_key(record.kid)
    assert stored is not None
    assert stored.check is not None
    for shown in (repr(stored), repr(record), json.dumps(stored.public())):
        assert stored.check not in shown
        assert "check" not in shown
        assert token not in shown


def test_the_check_value_is_32_bits_of_the_whole_key() -> None:
    token = KeyFormat().generate().token
    check = key_check(token)
    assert len(check) == 8
    assert int(check, 16) >= 0  # hex
    assert key_check(token) == check
    other = KeyFormat().generate(KeyType.API).token
    assert key_check(other) != check
    assert key_check(other[:-1]) != key_check(other)  # every character counts, the checksum's too


class OrderedHasher(CountingHasher):
    """Records which tokens argon2 verified, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def verify(self, hashed: str, token: str) -> bool:
        self.order.append(token)
        return super().verify(hashed, token)


async def test_a_flood_on_a_legacy_key_does_not_delay_a_key_with_a_check(make_harness: MakeHarness) -> None:
    harness = make_harness(hasher=OrderedHasher(), verify_concurrency=1, cache_ttl=3600)
    _, legacy = await _legacy(harness)
    current = await harness.key("acct_new")
    await harness.auth.start()
    flood = [f"Bearer {forged(legacy)}".encode() for _ in range(30)]

    async def attempt(header: bytes) -> bool:
        try:
            await harness.auth.authenticate(header, ATTACKER)
        except InvalidKey:
            return False
        return True

    results = await asyncio.gather(*(attempt(h) for h in flood), attempt(f"Bearer {current}".encode()))
    assert results == [False] * 30 + [True]
    order = harness.hasher.order  # type: ignore[attr-defined]
    assert len(order) == 31
    # Its token matched its check value: it went to argon2 as soon as a slot was free,
    # before the 29 wrong secrets still waiting (a key with no check cannot tell them apart).
    assert order.index(current) == 1
