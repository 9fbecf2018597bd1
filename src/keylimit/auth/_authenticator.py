"""The key hot path: an ``Authorization`` header in, a ``Principal`` out.

header → ``Bearer`` token → format and checksum (no I/O) → cache of verified keys → on a
miss, one lookup by kid, then the token held against the key's record (``_verifier``: its
check value, then argon2 in a worker thread, in a bounded number of slots), once for any
number of concurrent requests with the same token. Expiry is re-checked on every
hit; revocations and plan changes evict through the store's events; ``last_used_at`` is
written behind.

Failed authentications refuse nothing but themselves: there is no per-address lockout, so
that clients sharing an address (behind a load balancer, a NAT) can never lock each other
out, whatever one of them sends. What bounds an attacker instead: garbage costs no I/O, a
wrong secret costs one lookup and no argon2, and argon2 (a key created before check values,
or the one wrong secret in 2**32 whose check matches) never runs more than
``verify_concurrency`` at once, tokens that matched their check value first. Each refusal
is logged and counted by the middleware.

Stale-if-error: when the store fails while a lapsed entry is revalidated, the cached
principal is served for another TTL, as long as the key itself has not expired. A key
whose revocation was announced has no entry left, and a key never verified gets
``KeyStoreUnavailable`` (503), never ``InvalidKey``.

What a header must look like is ``_bearer``'s to say: ``MissingKey`` when there is no key,
``InvalidKey`` for anything else that is not a usable one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from .._clock import Clock, system_clock
from .._errors import InvalidKey, KeyStoreUnavailable
from .._models import Account, KeyRecord, Principal
from ..metrics import Metrics
from ..ratelimit._plans import Plans
from ..stores import KeyStore, StoreEvent
from ._bearer import MAX_HEADER, parse_bearer
from ._cache import Verified, VerifiedCache
from ._hashing import Hasher
from ._keys import KeyFormat, ParsedKey
from ._last_use import LastUse
from ._verifier import SecretVerifier

logger = logging.getLogger("keylimit.auth")
T = TypeVar("T")


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        *,
        key_format: KeyFormat | None = None,
        hasher: Hasher | None = None,
        plans: Plans | None = None,
        clock: Clock = system_clock,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        verify_concurrency: int = 2,
        failures_per_minute: int | None = None,
        last_used_interval: float = 60.0,
        metrics: Metrics | None = None,
    ) -> None:
        # ``failures_per_minute`` is accepted and ignored: failed authentications no longer
        # refuse an address (see the module docstring), and old configurations still load.
        del failures_per_minute
        self.store = store
        self.key_format = key_format or KeyFormat()
        self.plans = plans or Plans()
        self.clock = clock
        self.metrics = metrics
        self._cache = VerifiedCache(ttl=cache_ttl, size=cache_size, clock=clock)
        self.verify_concurrency = verify_concurrency
        self._secrets = SecretVerifier(store, hasher or Hasher(), verify_concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}
        self.last_use = LastUse(store, last_used_interval)
        self._subscribed = False
        self._started = False
        self._store_down = False

    @property
    def hasher(self) -> Hasher:
        return self._secrets.hasher

    @hasher.setter
    def hasher(self, hasher: Hasher) -> None:
        self._secrets.hasher = hasher

    @property
    def last_used_interval(self) -> float:
        return self.last_use.interval

    def __repr__(self) -> str:
        return f"Authenticator(store={self.store!r}, prefix={self.key_format.prefix!r}, cache={self._cache!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if asyncio.get_running_loop() is not self._loop:
            self._bind_loop()
        if not self._subscribed:
            self.store.subscribe(self._on_event)
            self._subscribed = True
        if not self._started:
            await self.store.start()
            self._started = True

    async def aclose(self) -> None:
        """Finish background work and write pending ``last_used_at``; the store stays open."""
        await self._secrets.aclose()
        await self.last_use.aclose()

    # -- evictions ---------------------------------------------------------------------------

    def evict_key(self, kid: str) -> None:
        self._cache.evict_key(kid)

    def evict_account(self, account_id: str) -> None:
        self._cache.evict_account(account_id)

    def _on_event(self, event: StoreEvent) -> None:
        logger.debug("evicting %s %s from the key cache", event.kind, event.id)
        if event.kind == "key":
            self.evict_key(event.id)
        else:
            self.evict_account(event.id)

    # -- the hot path ------------------------------------------------------------------------

    def recall(self, authorization: bytes | None) -> Principal | None:
        """The principal of a key verified and still fresh in the cache, else None (then
        ``authenticate`` decides). Synchronous: the path of nearly every request."""
        if authorization is None or len(authorization) > MAX_HEADER or not self._started:
            return None
        if asyncio.get_running_loop() is not self._loop:
            return None  # a new event loop: ``authenticate`` starts the store on it first
        cache = self._cache
        entry = cache.get(cache.digest(authorization))
        if entry is None:
            return None
        now = self.clock()
        return self._hit(entry, now) if now < entry.usable_until else None

    def _hit(self, entry: Verified, now: float) -> Principal:
        """A fresh cache entry served: counted, and its key's use recorded."""
        if self.metrics is not None:
            self.metrics.cache_hit()
        self.last_use.used(entry.record.kid, now)
        return entry.principal

    async def authenticate(self, authorization: bytes | None, client: str | None) -> Principal:
        """The caller's principal.

        Raises ``MissingKey``, ``InvalidKey`` or ``KeyStoreUnavailable`` (store down and
        the key not cached). ``client`` (the caller's address) only goes into the logs.
        """
        if not self._started or asyncio.get_running_loop() is not self._loop:
            await self.start()
        now = self.clock()
        entry = None
        digest = b""
        if authorization is not None and len(authorization) <= MAX_HEADER:
            digest = self._cache.digest(authorization)
            entry = self._cache.get(digest)
            if entry is not None and now < entry.usable_until:
                return self._hit(entry, now)
        try:
            parsed = parse_bearer(authorization, self.key_format)
        except InvalidKey:
            logger.debug("authentication failed from %s: not a well-formed key", client)
            raise
        if entry is None:
            try:
                principal = await self._verify_once(parsed, digest, None)
            except KeyStoreUnavailable as exc:
                self._store_failed(exc)
                raise
        elif entry.record.is_usable(now):
            # Fresh no more: revalidate against the store (no argon2 if the hash is the same).
            try:
                principal = await self._verify_once(parsed, digest, entry.record)
            except KeyStoreUnavailable as exc:
                self._store_failed(exc)
                renewed = self._cache.renew(digest)  # None if a revocation dropped it meanwhile
                if renewed is None:
                    raise
                principal = renewed.principal
        else:
            self._cache.discard(digest)  # expired since it was cached
            principal = None
        if principal is None:
            logger.debug("authentication failed from %s: key_%s not usable", client, parsed.kid)
            raise InvalidKey()
        self.last_use.used(parsed.kid, now)
        return principal

    def _bind_loop(self) -> None:
        # Semaphores, futures and tasks belong to one event loop; an app served again on
        # another loop (a second TestClient, a restarted server) gets fresh ones.
        self._loop = asyncio.get_running_loop()
        self._secrets.bind_loop()
        self._inflight.clear()
        self.last_use.forget_task()
        self._started = False

    def _store_failed(self, exc: KeyStoreUnavailable) -> None:
        if not self._store_down:
            self._store_down = True
            error = type(exc.__cause__ or exc).__name__
            logger.warning(
                "the key store is unavailable (%s): keys verified before keep working from the cache, "
                "keys not seen before get 503",
                error,
                extra={"storage": "keys", "state": "down", "reason": error},
            )

    async def _verify_once(self, parsed: ParsedKey, digest: bytes, known: KeyRecord | None) -> Principal | None:
        """Verify, sharing one verification among concurrent requests with the same token.

        ``known`` is the record this very token was verified against before (a lapsed cache
        entry): if the store still holds the same hash, argon2 need not run again.
        """
        future = self._inflight.get(digest)
        if future is None:
            future = asyncio.ensure_future(self._verify(parsed, digest, known))
            self._inflight[digest] = future
            future.add_done_callback(lambda done: self._verified(digest, done))
        # Shielded: a client that goes away must not cancel the others' verification.
        return await asyncio.shield(future)

    def _verified(self, digest: bytes, future: asyncio.Future[Principal | None]) -> None:
        if self._inflight.get(digest) is future:
            del self._inflight[digest]
        if not future.cancelled():
            future.exception()  # retrieved here, so that nobody waiting is not an error

    async def _verify(self, parsed: ParsedKey, digest: bytes, known: KeyRecord | None) -> Principal | None:
        epoch = self._cache.epoch
        record = await self._timed(self.store.get_key(parsed.kid))
        if self._store_down:
            self._store_down = False
            logger.info("the key store answers again", extra={"storage": "keys", "state": "up"})
        if record is None or record.key_type is not parsed.key_type or not record.is_usable(self.clock()):
            return None
        if known is None or not hmac.compare_digest(known.hash, record.hash):
            ok = await self._secrets.verify(record, parsed.token)
            if ok is None:
                return None  # a wrong secret, refused by the check value without argon2
            if self.metrics is not None:
                self.metrics.verification()
            if not ok:
                return None
        stored = await self._timed(self.store.get_account(record.account_id))
        account = stored or Account(record.account_id, self.plans.default)
        principal = Principal(
            key_id=record.id,
            account_id=record.account_id,
            key_type=record.key_type,
            scopes=frozenset(record.scopes),
            plan=account.plan,
            limits=account.limits,
            display_hint=record.hint,
        )
        self._secrets.upgrade(record, parsed.token)
        self._cache.put(digest, record, principal, epoch)
        logger.debug("verified %s of account %s", record.id, record.account_id)
        return principal

    async def _timed(self, call: Coroutine[Any, Any, T]) -> T:
        metrics = self.metrics
        if metrics is None:
            return await call
        start = time.perf_counter()
        try:
            return await call
        except Exception:
            metrics.storage_error("keys")
            raise
        finally:
            metrics.storage_call("keys", time.perf_counter() - start)
