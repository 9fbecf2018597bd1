"""``memory://``: per-process sliding-window counters; also the fallback when storage fails."""

from __future__ import annotations

import math

from . import _window
from ._base import Decision, Vector


class MemoryBackend:
    def __init__(self, window: float = 60.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self._states: dict[str, _window.State] = {}
        self._swept = 0

    @classmethod
    def from_url(cls, url: str, window: float) -> MemoryBackend:
        return cls(window)

    def __repr__(self) -> str:
        return f"MemoryBackend(window={self.window!r})"

    def _state(self, key: str, index: int) -> _window.State:
        state = self._states.get(key)
        if state is not None and state[0] == index and index <= self._swept + 1:
            return state  # the common case: current, and no sweep due
        if index > self._swept + 1:
            self._sweep(index)
            state = self._states.get(key)
        if state is None:
            state = self._states[key] = _window.new_state(index)
        elif state[0] < index:
            _window.roll(state, index)
        return state

    def _sweep(self, index: int) -> None:
        # Once a window: forget identities idle for two windows (their use is zero).
        stale = [k for k, s in self._states.items() if s[0] < index - 1]
        for k in stale:
            del self._states[k]
        self._swept = index

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        index = math.floor(now / self.window)  # as _window.position
        return _window.decide(self._state(key, index), limits, charge, need, now, self.window)

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        index, _ = _window.position(now, self.window)
        _window.apply_delta(self._state(key, index), delta)

    def settle(self, key: str, delta: Vector, now: float) -> None:
        if delta != (0, 0, 0):
            _window.apply_delta(self._state(key, math.floor(now / self.window)), delta)

    async def flush(self) -> None:
        return None

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        index, _ = _window.position(now, self.window)
        state = self._states.get(key)
        if state is None:
            state = _window.new_state(index)
        else:
            state = list(state)
            _window.roll(state, index)
        return _window.decide(state, limits, (0, 0, 0), (0, 0, 0), now, self.window)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)
