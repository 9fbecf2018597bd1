"""An injectable ``sleep`` that a test ends when it chooses: time passes only when told to."""

from __future__ import annotations

import asyncio

from keylimit import ManualClock

WAIT = 10.0
"""Bound on waiting for the sleeper to arrive (real work such as a refused connection runs first)."""


class ManualSleep:
    """Records what each wait asked for; ``wake()`` ends the wait in progress, moving ``clock`` by it."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.asked: list[float] = []
        self.cancelled = 0
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            if self._waiter is waiter:
                self._waiter = None

    @property
    def sleeping(self) -> bool:
        return self._waiter is not None

    async def until_asleep(self) -> float:
        """Wait until something sleeps; the seconds it asked for."""

        async def arrival() -> None:
            while self._waiter is None:
                await asyncio.sleep(0)

        await asyncio.wait_for(arrival(), WAIT)
        return self.asked[-1]

    async def wake(self) -> None:
        """End the wait in progress (the time it asked for has passed)."""
        seconds = await self.until_asleep()
        waiter, self._waiter = self._waiter, None
        if self.clock is not None:
            self.clock.advance(seconds)
        assert waiter is not None
        waiter.set_result(None)
