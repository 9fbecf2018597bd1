"""Sliding-window counter arithmetic, shared by every backend (the Redis script mirrors it).

Windows are aligned to the clock: window ``i`` covers ``[i*W, (i+1)*W)``. An identity
keeps, per dimension, the count of the current window and of the previous one; its use
at time ``t`` is ``prev * (1 - f) + cur`` where ``f`` is the fraction of the current
window elapsed at ``t``, i.e. the previous window weighted by how much of it still
overlaps the trailing window ``(t - W, t]``.
"""

from __future__ import annotations

import math

from ._base import Decision, Vector

State = list[float]
"""[window index, cur0, cur1, cur2, prev0, prev1, prev2]."""


def new_state(index: int) -> State:
    return [float(index), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def roll(state: State, index: int) -> None:
    """Bring ``state`` to window ``index`` in place.

    A state already at a later window (a caller whose clock lags another's, on shared
    storage) is left as it is: the request counts in the newest window.
    """
    held = int(state[0])
    if held >= index:
        return
    if held == index - 1:
        state[4:7] = state[1:4]
    else:
        state[4:7] = [0.0, 0.0, 0.0]
    state[1:4] = [0.0, 0.0, 0.0]
    state[0] = float(index)


def position(now: float, window: float) -> tuple[int, float]:
    """(window index, fraction of it elapsed)."""
    index = math.floor(now / window)
    return index, (now - index * window) / window


def used(state: State, frac: float) -> tuple[float, float, float]:
    weight = 1.0 - frac
    return (
        state[4] * weight + state[1],
        state[5] * weight + state[2],
        state[6] * weight + state[3],
    )


def first_exceeded(use: tuple[float, float, float], limits: Vector, need: Vector) -> int | None:
    for d in range(3):
        if need[d] > 0 and use[d] + need[d] > limits[d]:
            return d
    return None


def _wait(prev: float, cur: float, limit: int, need: int, frac: float, window: float) -> float:
    """Seconds until ``need`` fits one dimension, if nothing more is charged."""
    if need > limit:
        return (2.0 - frac) * window  # never fits: until both windows have cleared
    if cur + need <= limit and prev > 0:
        # Later in this window, once enough of the previous one has slid out.
        f = 1.0 - (limit - cur - need) / prev
        return max(0.0, (f - frac) * window)
    if cur > 0:
        # In the next window, once enough of this one has slid out.
        g = 1.0 - (limit - need) / cur
        return (1.0 - frac) * window + max(0.0, g) * window
    return 0.0


def decide(state: State, limits: Vector, charge: Vector, need: Vector, now: float, window: float) -> Decision:
    """Admit or refuse against ``state`` (already rolled to ``now``); charge it if admitted."""
    # On every request: ``position``, ``used``, ``first_exceeded`` and ``remaining``
    # written out inline for the common case, with the same arithmetic.
    index = math.floor(now / window)
    frac = (now - index * window) / window
    weight = 1.0 - frac
    u0 = state[4] * weight + state[1]
    u1 = state[5] * weight + state[2]
    u2 = state[6] * weight + state[3]
    l0, l1, l2 = limits
    n0, n1, n2 = need
    if (n0 <= 0 or u0 + n0 <= l0) and (n1 <= 0 or u1 + n1 <= l1) and (n2 <= 0 or u2 + n2 <= l2):
        c0, c1, c2 = charge
        state[1] += c0
        state[2] += c1
        state[3] += c2
        # int() of a positive float is its floor: max(0, floor(x)) without the calls.
        r0 = l0 - u0 - c0
        r1 = l1 - u1 - c1
        r2 = l2 - u2 - c2
        left = (int(r0) if r0 > 0 else 0, int(r1) if r1 > 0 else 0, int(r2) if r2 > 0 else 0)
        # tuple.__new__ skips the named tuple's Python-level __new__ (all fields given).
        return _new(Decision, (True, limits, (u0, u1, u2), left, (index + 1) * window, 0.0, None, need, window, False))
    use = (u0, u1, u2)
    exceeded = first_exceeded(use, limits, need)
    wait = max(
        _wait(state[4 + d], state[1 + d], limits[d], need[d], frac, window)
        for d in range(3)
        if need[d] > 0 and use[d] + need[d] > limits[d]
    )
    return Decision(
        False, limits, use, remaining(use, limits, (0, 0, 0)), (index + 1) * window, wait, exceeded, need, window
    )


_new = tuple.__new__


def remaining(use: tuple[float, float, float], limits: Vector, charge: Vector) -> Vector:
    return (
        max(0, math.floor(limits[0] - use[0] - charge[0])),
        max(0, math.floor(limits[1] - use[1] - charge[1])),
        max(0, math.floor(limits[2] - use[2] - charge[2])),
    )


def apply_delta(state: State, delta: Vector) -> None:
    """Add a settlement to the current window; a count never goes below zero."""
    c0 = state[1] + delta[0]
    c1 = state[2] + delta[1]
    c2 = state[3] + delta[2]
    state[1] = c0 if c0 > 0.0 else 0.0
    state[2] = c1 if c1 > 0.0 else 0.0
    state[3] = c2 if c2 > 0.0 else 0.0
