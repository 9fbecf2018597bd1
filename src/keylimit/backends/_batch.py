"""Settlements gathered per identity and written together, off the request path.

A response's settlement (completion tokens, the prompt correction) needs no answer, so it
need not cost the request a round trip: ``add`` merges it into the pending batch and a
background task writes the batch, then waits ``interval`` seconds before the next write so
that busy servers send one command for many responses. What is pending is lost if the
process dies; a failed write is logged and dropped (admission never depends on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ._base import Vector

logger = logging.getLogger("keylimit.limits")

Write = Callable[[dict[str, Vector], float], Awaitable[None]]
INTERVAL = 0.02


class SettlementBatch:
    __slots__ = ("_failing", "_now", "_pending", "_task", "_write", "_writing", "interval", "what")

    def __init__(self, write: Write, *, interval: float = INTERVAL, what: str = "rate limit storage") -> None:
        self._write = write
        self.interval = interval
        self.what = what
        self._pending: dict[str, Vector] = {}
        self._now = 0.0
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()  # one write at a time; flush() waits for the one in flight
        self._failing = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: str, delta: Vector, now: float) -> None:
        held = self._pending.get(key)
        self._pending[key] = delta if held is None else (held[0] + delta[0], held[1] + delta[1], held[2] + delta[2])
        self._now = now
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._write_pending()
                await asyncio.sleep(self.interval)
        finally:
            self._task = None

    async def _write_pending(self) -> None:
        async with self._writing:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await self._write(batch, self._now)
            except Exception as exc:
                if not self._failing:
                    logger.warning(
                        "could not write %d settlements to %s (%s); dropped", len(batch), self.what, type(exc).__name__
                    )
                self._failing = True
            else:
                self._failing = False

    async def flush(self) -> None:
        """Write everything pending now, after the write in flight, if any (for shutdown and tests)."""
        await self._write_pending()
        while self._pending:
            await self._write_pending()

    async def aclose(self) -> None:
        await self.flush()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
