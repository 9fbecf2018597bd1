"""Does a token prove its key's record, and what a proven record still needs written.

A token is first held against the record's check value (``_hashing``): a wrong secret is
refused there, without argon2. The rest are verified with argon2 in a worker thread, in
one of ``concurrency`` slots (``_verify_slots``), tokens that matched a check value first.
A record that a token has just proved may lack a check value (a key created before them)
or be hashed with older argon2 parameters: both are written behind, once per key at a
time, and ``aclose`` waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .._models import KeyRecord
from ..stores import KeyStore
from ._hashing import Hasher, check_refuses, key_check
from ._verify_slots import VerifySlots

logger = logging.getLogger("keylimit.auth")


class SecretVerifier:
    __slots__ = ("_background", "_slots", "_upgrading", "concurrency", "hasher", "store")

    def __init__(self, store: KeyStore, hasher: Hasher, concurrency: int) -> None:
        self.store = store
        self.hasher = hasher
        self.concurrency = concurrency
        self._slots = VerifySlots(concurrency)
        self._upgrading: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"SecretVerifier(hasher={self.hasher!r}, slots={self._slots!r})"

    def bind_loop(self) -> None:
        """A new event loop: fresh slots; the old loop's tasks are gone with it."""
        self._slots = VerifySlots(self.concurrency)
        self._background.clear()
        self._upgrading.clear()

    async def verify(self, record: KeyRecord, token: str) -> bool | None:
        """argon2's answer; None when the check value refused ``token`` and argon2 never ran."""
        if check_refuses(record.check, token):
            return None
        async with self._slots.hold(first=record.check is not None):
            return await asyncio.to_thread(self.hasher.verify, record.hash, token)

    def upgrade(self, record: KeyRecord, token: str) -> None:
        """Write behind what ``record``, just proved by ``token``, lacks."""
        rehash = self.hasher.needs_rehash(record.hash)
        add_check = record.check is None
        if (rehash or add_check) and record.kid not in self._upgrading:
            self._upgrading.add(record.kid)
            self._spawn(self._upgrade(record.kid, token, rehash=rehash, add_check=add_check))

    async def aclose(self) -> None:
        """Wait for the upgrades under way."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _upgrade(self, kid: str, token: str, *, rehash: bool, add_check: bool) -> None:
        try:
            if add_check:
                await self.store.set_check(kid, key_check(token))
                logger.info("added a check value to key_%s", kid)
            if rehash:
                async with self._slots.hold(first=False):
                    hashed = await asyncio.to_thread(self.hasher.hash, token)
                await self.store.set_hash(kid, hashed)
                logger.info("re-hashed key_%s with %r", kid, self.hasher)
        except Exception as exc:
            logger.warning("could not upgrade the stored record of key_%s (%s)", kid, type(exc).__name__)
        finally:
            self._upgrading.discard(kid)
