"""The cache of successful key verifications: a bounded LRU with a TTL, keyed by a keyed digest.

The digest is BLAKE2b keyed with a random per-process secret, so the cache never holds a
token, and a memory dump of it cannot be checked against guesses without that secret.
Revocations and plan changes evict entries (``evict_key``/``evict_account``); ``epoch``
lets a verification that raced with an eviction skip caching its possibly stale result.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from ._clock import Clock
from ._models import KeyRecord, Principal


@dataclass(frozen=True, slots=True)
class Verified:
    """A key that verified: its record (for the expiry re-check) and the principal it makes."""

    record: KeyRecord
    principal: Principal
    lapses_at: float


class VerifiedCache:
    __slots__ = ("_by_account", "_by_kid", "_clock", "_entries", "_secret", "epoch", "size", "ttl")

    def __init__(self, *, ttl: float, size: int, clock: Clock) -> None:
        if ttl < 0 or size < 0:
            raise ValueError("cache_ttl and cache_size must not be negative")
        self.ttl = ttl
        self.size = size
        self.epoch = 0
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        self._by_kid: dict[str, bytes] = {}
        self._by_account: dict[str, set[bytes]] = {}

    def __repr__(self) -> str:
        return f"VerifiedCache(ttl={self.ttl!r}, size={self.size!r}, entries={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode("ascii"), key=self._secret, digest_size=16).digest()

    def get(self, digest: bytes) -> Verified | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.lapses_at:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, record: KeyRecord, principal: Principal, epoch: int) -> None:
        """Remember a verification begun at ``epoch``; skipped if anything was evicted since."""
        if epoch != self.epoch or self.ttl <= 0 or self.size <= 0:
            return
        self._drop(digest)
        self._entries[digest] = Verified(record, principal, self._clock() + self.ttl)
        self._by_kid[record.kid] = digest
        self._by_account.setdefault(record.account_id, set()).add(digest)
        while len(self._entries) > self.size:
            self._drop(next(iter(self._entries)))

    def discard(self, digest: bytes) -> None:
        self._drop(digest)

    def evict_key(self, kid: str) -> None:
        self.epoch += 1
        digest = self._by_kid.get(kid)
        if digest is not None:
            self._drop(digest)

    def evict_account(self, account_id: str) -> None:
        self.epoch += 1
        for digest in list(self._by_account.get(account_id, ())):
            self._drop(digest)

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        record = entry.record
        if self._by_kid.get(record.kid) == digest:
            del self._by_kid[record.kid]
        digests = self._by_account.get(record.account_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_account[record.account_id]
