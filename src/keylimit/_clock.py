"""Clocks: everything that reads the time takes a ``Clock`` so that tests can move it."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""A callable returning the current Unix time in seconds."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that only moves when told to; for tests (exported as ``keylimit.ManualClock``)."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = float(now)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now!r})"
