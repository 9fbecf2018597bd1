"""``redis://``, ``rediss://``, ``redis+cluster://``: keys shared by every process and host.

Layout (the braces are hash tags: a key's record has its kid's slot, an account's hash and
its set of kids share the account's)::

    kl:key:{kid}                  hash: one key's record (see ``_codec``)
    kl:account:{account}          hash: the account's plan and custom limits
    kl:account:{account}:keys     set: the account's kids

so Redis Cluster works: each write touches one hash slot (creating a key is two writes, the
key's record first, then the account's set), in a small Lua script where it must be atomic
(revocation keeps its first ``revoked_at``; a hash is never half-created). Revocations and
plan changes are published on ``keylimit:events`` (see ``_channel``); ``start()`` runs a
subscriber that hands other processes' events to this store's listeners and reconnects,
with backoff, whenever Redis goes away. PUBLISH reaches every node of a cluster, so one
subscription is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from .._errors import ConfigurationError, KeyStoreUnavailable
from .._models import Account, KeyRecord, KeyStatus
from ..redis._url import ClusterGate, is_cluster, redact_url, redis_client
from ._base import Listener, StoreEvent
from ._channel import EventChannel
from ._codec import (
    account_from_fields,
    account_to_fields,
    decode_hash,
    encode_hash,
    key_from_fields,
    key_to_fields,
)

try:
    from redis.exceptions import RedisClusterException, RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError("KEYLIMIT_KEYS_URL: Redis needs the extra: pip install 'keylimit[redis]'") from exc

T = TypeVar("T")
_FAILURES = (RedisError, RedisClusterException, OSError)

# KEYS[1] key hash; ARGV field, value, ... -> 0 when the kid is taken
_ADD_KEY = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV))
return 1
"""
# KEYS[1] account hash, KEYS[2] its set of kids; ARGV[1] kid, then the default account's fields
_ADD_TO_ACCOUNT = """
if redis.call('exists', KEYS[1]) == 0 then redis.call('hset', KEYS[1], unpack(ARGV, 2)) end
redis.call('sadd', KEYS[2], ARGV[1])
return 1
"""
# KEYS[1] key hash; ARGV[1] account, ARGV[2] revoked_at, ARGV[3] the revoked status
_REVOKE = """
if redis.call('hget', KEYS[1], 'account_id') ~= ARGV[1] then return false end
if redis.call('hget', KEYS[1], 'status') ~= ARGV[3] then
  redis.call('hset', KEYS[1], 'status', ARGV[3], 'revoked_at', ARGV[2])
end
return redis.call('hgetall', KEYS[1])
"""
# KEYS[1] key hash; ARGV field, value, ... written only if the key exists
_UPDATE_KEY = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV))
return 1
"""
# KEYS[1] account hash; ARGV field, value, ... replace it whole
_PUT_ACCOUNT = """
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], unpack(ARGV))
return 1
"""


def key_name(kid: str) -> str:
    return f"kl:key:{{{kid}}}"


def account_name(account_id: str) -> str:
    return f"kl:account:{{{account_id}}}"


def account_keys_name(account_id: str) -> str:
    return f"kl:account:{{{account_id}}}:keys"


class RedisKeyStore:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self._client = redis_client(url, timeout=timeout)
        self._listeners: list[Listener] = []
        self._events = EventChannel(self._client, url, self._emit, cluster=is_cluster(url), failures=_FAILURES)
        self._gate = ClusterGate(self._client)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 2.0) -> RedisKeyStore:
        return cls(url, timeout=timeout)

    def __repr__(self) -> str:
        return f"RedisKeyStore(url={redact_url(self.url)!r})"

    # The subscriber's state, for tests to await instead of sleeping.
    @property
    def _live(self) -> asyncio.Event:
        return self._events.live

    @property
    def _lost(self) -> asyncio.Event:
        return self._events.lost

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            if not self._gate.ready:
                try:
                    await self._gate.wait()
                except BaseException:
                    close = getattr(awaitable, "close", None)  # never awaited now: say so quietly
                    if close is not None:
                        close()
                    raise
            return await awaitable
        except _FAILURES as exc:
            raise KeyStoreUnavailable(
                f"the Redis key store at {redact_url(self.url)} failed ({type(exc).__name__})"
            ) from exc

    async def _eval(self, script: str, keys: list[str], args: list[str]) -> Any:
        return await self._call(self._client.eval(script, len(keys), *keys, *args))

    # -- the KeyStore protocol ---------------------------------------------------------------

    async def add_key(self, record: KeyRecord) -> None:
        fields = _flatten(encode_hash(key_to_fields(record)))
        if not await self._eval(_ADD_KEY, [key_name(record.kid)], fields):
            raise ValueError("key id already exists")
        # The key's own hash first: if this second step fails, nobody holds the token of
        # the unlisted key (create raised), so it can never authenticate.
        account = _flatten(encode_hash(account_to_fields(Account(record.account_id))))
        await self._eval(
            _ADD_TO_ACCOUNT,
            [account_name(record.account_id), account_keys_name(record.account_id)],
            [record.kid, *account],
        )

    async def get_key(self, kid: str) -> KeyRecord | None:
        raw = await self._call(self._client.hgetall(key_name(kid)))
        return key_from_fields(decode_hash(raw)) if raw else None

    async def list_keys(self, account_id: str) -> list[KeyRecord]:
        kids = await self._call(self._client.smembers(account_keys_name(account_id)))
        if not kids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for kid in kids:
            pipe.hgetall(key_name(kid.decode() if isinstance(kid, bytes) else kid))
        found = [key_from_fields(decode_hash(raw)) for raw in await self._call(pipe.execute()) if raw]
        mine = [r for r in found if r.account_id == account_id]
        return sorted(mine, key=lambda r: (r.created_at, r.kid))

    async def revoke_key(self, account_id: str, kid: str, at: float) -> KeyRecord | None:
        raw = await self._eval(_REVOKE, [key_name(kid)], [account_id, repr(float(at)), KeyStatus.REVOKED.value])
        if not raw:
            return None
        record = key_from_fields(decode_hash(dict(zip(raw[::2], raw[1::2], strict=True))))
        await self._announce(StoreEvent("key", kid))
        return record

    async def set_hash(self, kid: str, hashed: str) -> None:
        await self._eval(_UPDATE_KEY, [key_name(kid)], ["hash", hashed])

    async def set_check(self, kid: str, check: str) -> None:
        await self._eval(_UPDATE_KEY, [key_name(kid)], ["check", check])

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        pipe = self._client.pipeline(transaction=False)
        for kid, at in used.items():
            pipe.eval(_UPDATE_KEY, 1, key_name(kid), "last_used_at", repr(float(at)))
        await self._call(pipe.execute())

    async def get_account(self, account_id: str) -> Account | None:
        raw = await self._call(self._client.hgetall(account_name(account_id)))
        return account_from_fields(decode_hash(raw)) if raw else None

    async def put_account(self, account: Account) -> None:
        fields = _flatten(encode_hash(account_to_fields(account)))
        await self._eval(_PUT_ACCOUNT, [account_name(account.id)], fields)
        await self._announce(StoreEvent("account", account.id))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self._events.start()

    async def aclose(self) -> None:
        await self._events.aclose()
        with contextlib.suppress(*_FAILURES):
            await self._client.aclose()

    def _emit(self, event: StoreEvent) -> None:
        for listener in self._listeners:
            listener(event)

    async def _announce(self, event: StoreEvent) -> None:
        """Tell this process's listeners at once, then the other processes through Redis."""
        self._emit(event)
        await self._events.publish(event)


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]
