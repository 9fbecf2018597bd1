"""Failed authentications per client address, counted in a sliding minute.

The counting is the rate limiter's own sliding-window arithmetic (``backends._window``) on
one dimension, so a throttled address learns when it may try again the same way a
rate-limited account does. Memory is bounded: the least recently failing addresses are
forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

from ._clock import Clock
from .backends._window import State, decide, new_state, position, roll

MAX_CLIENTS = 100_000


class FailureThrottle:
    __slots__ = ("_clients", "_clock", "limit", "max_clients", "window")

    def __init__(self, limit: int, *, clock: Clock, window: float = 60.0, max_clients: int = MAX_CLIENTS) -> None:
        if limit < 1:
            raise ValueError("failures_per_minute must be at least 1")
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, State] = OrderedDict()

    def __repr__(self) -> str:
        return f"FailureThrottle(limit={self.limit!r}, window={self.window!r}, clients={len(self._clients)})"

    def retry_after(self, client: str | None) -> float | None:
        """Seconds until ``client`` may try again, or None when it is not throttled."""
        state = self._clients.get(client or "")
        if state is None:
            return None
        now = self._clock()
        roll(state, position(now, self.window)[0])
        if state[1] == 0 and state[4] == 0:
            del self._clients[client or ""]
            return None
        decision = decide(state, (self.limit, 0, 0), (0, 0, 0), (1, 0, 0), now, self.window)
        return None if decision.allowed else max(decision.retry_after, 0.001)

    def failed(self, client: str | None) -> None:
        key = client or ""
        index = position(self._clock(), self.window)[0]
        state = self._clients.pop(key, None) or new_state(index)
        roll(state, index)
        state[1] += 1
        self._clients[key] = state
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
