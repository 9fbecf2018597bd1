"""The cache of successful key verifications: a bounded LRU, keyed by a keyed digest.

The digest is BLAKE2b of the whole ``Authorization`` value, keyed with a random per-process
secret, so the cache never holds a token, and a memory dump of it cannot be checked against
guesses without that secret. An entry is *fresh* for ``ttl`` seconds; after that it must be
revalidated against the store (is the key still active, with the same hash, and what is the
account's plan now?) but not verified with argon2 again: the token already matched that
hash. A revocation drops the key's entries (``evict_key``); a plan change lapses the
account's (``evict_account``). ``epoch`` lets a verification that raced with an eviction
skip caching its stale result. While the store cannot revalidate, a lapsed entry may be
``renew``-ed and served stale; a dropped one cannot.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .._clock import Clock
from .._models import KeyRecord, Principal


@dataclass(frozen=True, slots=True)
class Verified:
    """A key that verified: its record (for the expiry re-check) and the principal it makes."""

    record: KeyRecord
    principal: Principal
    lapses_at: float
    """Until then the entry is fresh; after, it is revalidated against the store."""
    usable_until: float
    """``min(lapses_at, record.expires_at)``: one comparison on the hot path."""


class VerifiedCache:
    __slots__ = ("_by_account", "_by_kid", "_clock", "_entries", "_keyed", "epoch", "size", "ttl")

    def __init__(self, *, ttl: float, size: int, clock: Clock) -> None:
        if ttl < 0 or size < 0:
            raise ValueError("cache_ttl and cache_size must not be negative")
        self.ttl = ttl
        self.size = size
        self.epoch = 0
        self._clock = clock
        # A keyed hash, set up once: each digest copies it (cheaper than keying anew).
        self._keyed = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=16)
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        self._by_kid: dict[str, set[bytes]] = {}
        self._by_account: dict[str, set[bytes]] = {}

    def __repr__(self) -> str:
        return f"VerifiedCache(ttl={self.ttl!r}, size={self.size!r}, entries={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, authorization: bytes) -> bytes:
        keyed = self._keyed.copy()
        keyed.update(authorization)
        return keyed.digest()

    def get(self, digest: bytes) -> Verified | None:
        """The entry, fresh or lapsed (the caller checks ``usable_until``)."""
        entry = self._entries.get(digest)
        if entry is not None:
            self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, record: KeyRecord, principal: Principal, epoch: int) -> None:
        """Remember a verification begun at ``epoch``; skipped if anything was evicted since."""
        if epoch != self.epoch or self.ttl <= 0 or self.size <= 0:
            return
        self._drop(digest)
        lapses_at = self._clock() + self.ttl
        self._entries[digest] = Verified(record, principal, lapses_at, _usable_until(record, lapses_at))
        self._by_kid.setdefault(record.kid, set()).add(digest)
        self._by_account.setdefault(record.account_id, set()).add(digest)
        while len(self._entries) > self.size:
            self._drop(next(iter(self._entries)))

    def renew(self, digest: bytes) -> Verified | None:
        """Make a lapsed entry fresh for another ``ttl`` (the store could not revalidate it).

        None when the entry is gone (a revocation dropped it): that one is never served stale.
        """
        entry = self._entries.get(digest)
        if entry is None:
            return None
        lapses_at = self._clock() + self.ttl
        entry = replace(entry, lapses_at=lapses_at, usable_until=_usable_until(entry.record, lapses_at))
        self._entries[digest] = entry
        return entry

    def discard(self, digest: bytes) -> None:
        self._drop(digest)

    def evict_key(self, kid: str) -> None:
        """The key changed (revoked): its entries go, so that nothing serves them stale."""
        self.epoch += 1
        for digest in list(self._by_kid.get(kid, ())):
            self._drop(digest)

    def evict_account(self, account_id: str) -> None:
        """The account changed (plan, limits): its entries must be revalidated."""
        self.epoch += 1
        self._lapse(self._by_account.get(account_id, ()))

    def _lapse(self, digests: Iterable[bytes]) -> None:
        # Lapsed rather than dropped: revalidation re-reads the store but, unlike a full
        # verification, runs no argon2, so a plan change does not cost every key a verify.
        for digest in digests:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries[digest] = replace(entry, lapses_at=-math.inf, usable_until=-math.inf)

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        record = entry.record
        for index, name in ((self._by_kid, record.kid), (self._by_account, record.account_id)):
            digests = index.get(name)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del index[name]


def _usable_until(record: KeyRecord, lapses_at: float) -> float:
    return lapses_at if record.expires_at is None else min(lapses_at, record.expires_at)
