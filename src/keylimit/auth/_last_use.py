"""``last_used_at`` written behind: a key's use is queued at most once per interval, and
the queue goes to the store in one ``touch_keys`` call a moment later.

Which keys were queued lately is kept in two generations of one interval each, swapped in
constant time: a key is queued again once neither holds it, and no pass over them is ever
made on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math

from ..stores import KeyStore

logger = logging.getLogger("keylimit.auth")

TOUCH_DELAY = 1.0
"""Seconds that ``last_used_at`` writes gather before one ``touch_keys`` call."""


class LastUse:
    __slots__ = ("_before", "_flusher", "_pending", "_queued", "_since", "interval", "store")

    def __init__(self, store: KeyStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._queued: dict[str, float] = {}  # kid -> when its use was queued, this generation
        self._before: dict[str, float] = {}  # the same, the generation before
        self._since = -math.inf  # when this generation began
        self._pending: dict[str, float] = {}  # kid -> last use not yet written
        self._flusher: asyncio.Task[None] | None = None

    def used(self, kid: str, now: float) -> None:
        if now - self._since >= self.interval:
            self._before, self._queued, self._since = self._queued, {}, now
        last = self._queued.get(kid)
        if last is None:
            last = self._before.get(kid)
        if last is not None and now - last < self.interval:
            return
        self._queued[kid] = now
        self._pending[kid] = now
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    def tracked(self) -> set[str]:
        """The keys whose use was queued within the last two generations."""
        return {*self._before, *self._queued}

    def forget_task(self) -> None:
        """The event loop changed: its task is gone with it (what it held stays pending)."""
        self._flusher = None

    async def aclose(self) -> None:
        """Write what is pending now."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        await self._flush()

    async def _flush_soon(self) -> None:
        await asyncio.sleep(TOUCH_DELAY)
        await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await self.store.touch_keys(pending)
        except Exception as exc:
            logger.warning("could not record the last use of %d keys (%s)", len(pending), type(exc).__name__)
