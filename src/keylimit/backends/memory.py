"""``memory://``: per-process sliding-window counters; also the fallback when storage fails.

Identities are kept in two generations: those used in the current window, and those
used in the previous one (whose counts still weigh on the current window) but not
since. When a window begins, the current generation becomes the previous one and the
previous one, idle for two windows, is forgotten, without a pass over the identities:
the event loop never stalls on a sweep, however many there are. A forgotten generation
is freed a few entries per call rather than all at once, for the same reason. An identity
that still owes (debt, see ``_window``) is not freed but taken back into the current
generation, so that no debt is forgotten for being idle; until then a forgotten
generation is still searched, on a miss of the other two.
"""

from __future__ import annotations

import math

from . import _window
from ._base import Decision, Vector

FREED_PER_CALL = 16
"""Entries of a forgotten generation freed on each call (freeing a million at once takes
a good part of a second)."""


class MemoryBackend:
    def __init__(self, window: float = 60.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self._index: int | None = None  # the current generation's window
        self._current: dict[str, _window.State] = {}
        self._previous: dict[str, _window.State] = {}
        self._forgotten: list[dict[str, _window.State]] = []

    @classmethod
    def from_url(cls, url: str, window: float) -> MemoryBackend:
        return cls(window)

    def __repr__(self) -> str:
        return f"MemoryBackend(window={self.window!r})"

    def _state(self, key: str, index: int, limits: Vector | None = None) -> _window.State:
        if self._forgotten:
            self._free()
        state = self._current.get(key)
        if state is not None and state[0] == index:
            return state  # the common case: used already in this window
        if self._index is None or index > self._index:
            self._advance(index)
            state = None  # it moved to the previous generation, if it was in the current one
        if state is None:
            state = self._previous.pop(key, None)
            if state is None:
                state = self._forgotten_state(key, take=True) or _window.new_state(index, limits)
            self._current[key] = state
        if state[0] < index:
            _window.roll(state, index, limits)
        return state

    def _forgotten_state(self, key: str, *, take: bool) -> _window.State | None:
        """``key``'s state in a forgotten generation not freed yet (it may still owe)."""
        for generation in self._forgotten:
            state = generation.pop(key, None) if take else generation.get(key)
            if state is not None:
                return state
        return None

    def _advance(self, index: int) -> None:
        """Window ``index`` begins: generations move on, in constant time."""
        if self._index is not None and index == self._index + 1:
            gone, self._previous = self._previous, self._current
        else:  # the first call, or more than a window without one: everything is idle
            gone = self._previous
            if self._current:
                self._forgotten.append(self._current)
            self._previous = {}
        if gone:
            self._forgotten.append(gone)
        self._current = {}
        self._index = index

    def _free(self) -> None:
        forgotten = self._forgotten[-1]
        for _ in range(min(FREED_PER_CALL, len(forgotten))):
            key, state = forgotten.popitem()
            if _window.owes(state) and self._index is not None:
                _window.roll(state, self._index)
                self._current[key] = state
        if not forgotten:
            self._forgotten.pop()

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        index = math.floor(now / self.window)  # as _window.position
        return _window.decide(self._state(key, index, limits), limits, charge, need, now, self.window)

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
        state = self._current.get(key) or self._previous.get(key) or self._forgotten_state(key, take=False)
        if state is None:
            state = _window.new_state(index)
        else:
            state = list(state)
            _window.roll(state, index, limits)
        return _window.decide(state, limits, (0, 0, 0), (0, 0, 0), now, self.window)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._current, self._previous, self._forgotten, self._index = {}, {}, [], None

    def __len__(self) -> int:
        """Identities whose counts may still matter (used in this window or the previous one)."""
        return len(self._current) + len(self._previous)
