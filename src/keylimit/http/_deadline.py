"""Deadlines for reading request bodies, kept by one timer for all requests in flight.

``asyncio.timeout`` builds a context object and schedules and cancels a timer handle per
use: more work than the rest of reading a small body. Every body read of
one middleware has the same time limit, so the deadlines of the reads in flight are in
the order they began: a dict in insertion order is their queue, and one timer, set for
the oldest, is all they need. A read that ends leaves the queue; the timer, when it
fires, cancels the reads that are late and sets itself for the next one.
"""

from __future__ import annotations

import asyncio


class DeadlineExceeded(Exception):
    """The awaited read did not finish within the time limit."""


class Deadlines:
    """A reader calls ``begin`` in its task, awaits, and calls ``end``; on ``CancelledError``,
    ``expired`` says whether it was this deadline, ``limit`` seconds after ``begin``.

    Cancelling the task for a late read is told apart from any other cancellation as
    ``asyncio.timeout`` does it (``Task.uncancel``), so an outside cancellation still
    propagates. State belongs to the running loop; on another loop it starts afresh.
    """

    __slots__ = ("_late", "_loop", "_queue", "_timer", "limit")

    def __init__(self, limit: float) -> None:
        if not limit > 0:
            raise ValueError("limit must be positive")
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: dict[asyncio.Task[object], float] = {}
        self._late: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Reads in flight."""
        return len(self._queue)

    def begin(self) -> asyncio.Task[object]:
        """Start the current task's deadline."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - ASGI servers always run requests in tasks
            raise RuntimeError("a deadline needs a task")
        if loop is not self._loop:
            self._reset(loop)
        deadline = loop.time() + self.limit
        self._queue[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return task

    def expired(self, task: asyncio.Task[object]) -> bool:
        """On ``CancelledError``: whether it was this deadline's (not another cancellation)."""
        if task in self._late:
            self._late.discard(task)
            return task.uncancel() == 0
        return False

    def end(self, task: asyncio.Task[object]) -> None:
        self._queue.pop(task, None)
        self._late.discard(task)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._queue, self._late, self._timer = loop, {}, set(), None

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:  # pragma: no cover - the timer exists only after _reset
            return
        now = loop.time()
        queue = self._queue
        while queue:
            task, deadline = next(iter(queue.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del queue[task]
            if not task.done():
                self._late.add(task)
                task.cancel()
