"""How many argon2 runs happen at once, and who goes first.

A semaphore of ``size`` slots with two queues. A token that matched its key's check value
is almost surely the key itself: it waits in the first queue. A token for a key created
before check values (a wrong secret cannot be told from the key without argon2) and
background rehashes wait in the second, served only when the first is empty. So a flood
of wrong secrets against such a key delays the other keys' first verifications by at most
the argon2 runs already under way, however long its queue grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class VerifySlots:
    __slots__ = ("_free", "_queues", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("verify_concurrency must be at least 1")
        self.size = size
        self._free = size
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    def __repr__(self) -> str:
        return f"VerifySlots(size={self.size}, free={self._free}, waiting={sum(map(len, self._queues))})"

    @asynccontextmanager
    async def hold(self, *, first: bool) -> AsyncIterator[None]:
        """One slot for the ``async with`` block; ``first`` waits in the first queue."""
        await self._acquire(self._queues[0 if first else 1])
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, queue: deque[asyncio.Future[None]]) -> None:
        if self._free > 0 and not (self._queues[0] or self._queues[1]):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            elif waiter in queue:  # else a release already skipped it
                queue.remove(waiter)
            raise

    def _release(self) -> None:
        # The slot goes straight to the next waiter, so that nobody can take it in between.
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
