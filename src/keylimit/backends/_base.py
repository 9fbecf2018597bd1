"""The limit backend seam: atomic admission on three dimensions, and settlement afterwards."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

Vector = tuple[int, int, int]
"""(requests, prompt tokens, completion tokens)."""

DIMENSIONS = ("requests", "prompt_tokens", "completion_tokens")
REQUESTS, PROMPT, COMPLETION = 0, 1, 2


class Decision(NamedTuple):
    """The outcome of one admission, with everything the headers and a 429 need.

    A named tuple rather than a frozen dataclass: one is built on every request, and a
    tuple is built in a fifth of the time.
    """

    allowed: bool
    limits: Vector
    used: tuple[float, float, float]
    """Weighted use of the sliding window before this request."""
    remaining: Vector
    """What is left now: after this request's charge when allowed."""
    reset_at: float
    """Unix time at which the current (clock-aligned) window ends."""
    retry_after: float
    """Seconds until enough budget frees for the refused request (debt paid back
    included); 0 when allowed."""
    exceeded: int | None
    """Index into ``DIMENSIONS`` of the limit that refused; None when allowed."""
    requested: Vector
    """What the request needed to fit."""
    window: float
    unknown: bool = False
    """True when storage was unreachable and policy ``open`` admitted without counting:
    ``used`` and ``remaining`` are not known (they read as zero use and the full limits)."""


@runtime_checkable
class LimitBackend(Protocol):
    """Sliding-window counters per identity, O(1) memory per identity and dimension.

    ``acquire`` admits when, for every dimension with ``need > 0``, the window's weighted
    use plus ``need`` fits the limit; then and only then it adds ``charge`` to every
    dimension (atomically: a refusal charges nothing). ``adjust`` adds a (possibly
    negative) settlement to the current window; what takes a window past its limit is
    carried forward as debt that later windows pay back (``_window``), and a refund pays
    debt back first. Both raise ``LimitStorageUnavailable``
    when storage fails. ``settle`` is the fire-and-forget ``adjust`` that responses use:
    shared backends batch it so that a response costs no round trip of its own.
    """

    window: float

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision: ...

    async def adjust(self, key: str, delta: Vector, now: float) -> None: ...

    def settle(self, key: str, delta: Vector, now: float) -> None:
        """``adjust`` without waiting: applied at once or written soon in a batch; never raises."""

    async def flush(self) -> None:
        """Write every pending ``settle`` now."""

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        """Where ``key`` stands, charging nothing (need is zero)."""

    async def ping(self) -> None:
        """Raise ``LimitStorageUnavailable`` unless storage answers."""

    async def aclose(self) -> None: ...
