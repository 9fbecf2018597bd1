"""Sliding-window counter arithmetic, shared by every backend (the Redis script mirrors it).

Windows are aligned to the clock: window ``i`` covers ``[i*W, (i+1)*W)``. An identity
keeps, per dimension, the count of the current window and of the previous one; its use
at time ``t`` is ``prev * (1 - f) + cur`` where ``f`` is the fraction of the current
window elapsed at ``t``, i.e. the previous window weighted by how much of it still
overlaps the trailing window ``(t - W, t]``.

Debt: a settlement may push a window's count past the limit (a response costs what it
costs, after it was admitted). When the state leaves that window, the excess moves into
the dimension's debt, and each later window starts with up to a limit's worth of the
debt already in its count, the debt shrinking by as much. Over any run of windows an
identity is therefore charged at most the limit per window plus the debt still
outstanding at the end, and while it holds debt every window it enters is full. Rolling
needs the limits, which settlements are not told: the state keeps those of the last
admission that rolled it into a window (``UNKNOWN`` in a state only settlements have
written: rolled without limits, it moves nothing into debt).
"""

from __future__ import annotations

import math
import sys

from ._base import Decision, Vector

State = list[float]
"""[window index, cur x3, prev x3, debt x3, limit x3].

A stored limit of 0 carries no debt forward (a limit of 0 can pay none back; a backend
without debt stores 0)."""

UNKNOWN = -1.0
"""A stored limit not known yet (a state that only settlements have written): the
limits of the admission that rolls it are used."""
_MAX_DOUBLE = sys.float_info.max
_EXACT = float(1 << 52)
"""Windows of debt past which the search for the window that fits is not worth doing."""


def new_state(index: int, limits: Vector | None = None) -> State:
    if limits is None:
        return [float(index), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, UNKNOWN, UNKNOWN, UNKNOWN]
    return [float(index), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, *map(as_double, limits)]


def as_double(limit: int) -> float:
    """A limit as the double the Redis script sees (a larger integer: the largest double)."""
    return float(limit) if limit <= _MAX_DOUBLE else _MAX_DOUBLE


def _clamp(x: float, limit: float) -> float:
    return 0.0 if x <= 0 else (limit if x >= limit else x)


def roll(state: State, index: int, limits: Vector | None = None) -> None:
    """Bring ``state`` to window ``index`` in place, paying debt at each window's limit.

    The limits the state holds are used; ``limits`` where it holds none, and they become
    the state's limits once it has rolled. A state already at a later window (a caller
    whose clock lags another's, on shared storage) is left as it is: the request counts
    in the newest window.
    """
    held = state[0]
    if held >= index:
        return
    k = index - held
    for d in range(3):
        limit = state[10 + d]
        if limit < 0 and limits is not None:
            limit = as_double(limits[d])
        count, debt = state[1 + d], state[7 + d]
        if limit <= 0:  # no limit known, or none to pay it back at
            state[1 + d], state[4 + d], state[7 + d] = 0.0, count if k == 1 else 0.0, 0.0
            continue
        if count > limit:
            debt = debt + (count - limit)
            count = limit
        if debt > 0:
            state[4 + d] = count if k == 1 else _clamp(debt - (k - 2) * limit, limit)
            state[1 + d] = _clamp(debt - (k - 1) * limit, limit)
            debt = debt - k * limit
            state[7 + d] = debt if debt > 0 else 0.0
        else:
            state[1 + d], state[4 + d] = 0.0, count if k == 1 else 0.0
    if limits is not None:
        state[10:13] = map(as_double, limits)
    state[0] = float(index)


def owes(state: State) -> bool:
    """Whether ``state`` holds debt, or a count past its limit that becomes debt."""
    for d in range(3):
        limit = state[10 + d]
        if limit > 0 and (state[7 + d] > 0 or state[1 + d] > limit):
            return True
    return False


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


def _wait(
    prev: float,
    cur: float,
    limit: int,
    need: int,
    frac: float,
    window: float,
    debt: float = 0.0,
    carried: bool = True,
) -> float:
    """Seconds until ``need`` fits one dimension, if nothing more is charged.

    ``carried``: whether a count past the limit becomes debt when the window ends.
    """
    if need > limit:
        return (2.0 - frac) * window  # never fits: until both windows have cleared
    if debt <= 0 and cur + need <= limit and prev > 0:
        # Later in this window, once enough of the previous one has slid out.
        f = 1.0 - (limit - cur - need) / prev
        return max(0.0, (f - frac) * window)
    cap = as_double(limit)
    owed = debt + (cur - cap if carried and cur > cap else 0.0)  # the debt once this window is left
    if owed <= 0:
        if cur > 0:
            # In the next window, once enough of this one has slid out.
            g = 1.0 - (limit - need) / cur
            return (1.0 - frac) * window + max(0.0, g) * window
        return 0.0
    return _wait_owed(owed, cur if cur < cap else cap, cap, need, frac, window)


def _wait_owed(owed: float, held: float, limit: float, need: int, frac: float, window: float) -> float:
    """The wait when ``owed`` is carried out of this window (``held`` stays in its count).

    Window ``m`` ahead starts with ``clamp(owed - (m-1) * limit)`` in its count (the same
    operations as ``roll``): the request fits in the first one where that leaves room for
    ``need``, once enough of its previous window has slid out.
    """
    room = limit - need
    estimate = (owed - room) / limit  # m - 1, give or take rounding
    if not estimate < _EXACT:  # beyond any real debt: no exact answer is worth the search
        wait = (estimate + 2.0 - frac) * window
        return wait if wait < _MAX_DOUBLE else _MAX_DOUBLE
    m = max(1, math.ceil(estimate) + 1)
    while m > 1 and _clamp(owed - (m - 2) * limit, limit) <= room:
        m -= 1
    while _clamp(owed - (m - 1) * limit, limit) > room:
        m += 1
    cur = _clamp(owed - (m - 1) * limit, limit)
    prev = held if m == 1 else _clamp(owed - (m - 2) * limit, limit)
    f = 1.0 - (room - cur) / prev if prev > 0 else 0.0
    return (m - frac) * window + max(0.0, f) * window


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
        _wait(state[4 + d], state[1 + d], limits[d], need[d], frac, window, state[7 + d], state[10 + d] != 0)
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
    """Add a settlement to the current window; a count never goes below zero.

    A refund (a negative settlement) pays back debt before it lowers the count: a window
    in debt stays full, and debt never goes below zero.
    """
    change: tuple[float, float, float] = delta
    if state[7] or state[8] or state[9]:
        change = (_refund(state, 0, delta[0]), _refund(state, 1, delta[1]), _refund(state, 2, delta[2]))
    c0 = state[1] + change[0]
    c1 = state[2] + change[1]
    c2 = state[3] + change[2]
    state[1] = c0 if c0 > 0.0 else 0.0
    state[2] = c1 if c1 > 0.0 else 0.0
    state[3] = c2 if c2 > 0.0 else 0.0


def _refund(state: State, d: int, amount: float) -> float:
    """Pay ``amount`` (if negative) against dimension ``d``'s debt; what is left of it."""
    debt = state[7 + d]
    if amount >= 0 or debt <= 0:
        return amount
    left = debt + amount
    if left >= 0:
        state[7 + d] = left
        return 0
    state[7 + d] = 0.0
    return left
