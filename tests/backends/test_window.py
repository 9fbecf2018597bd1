"""The debt arithmetic itself (``_window``), for any state: rolling is the same in one step
or many, nothing charged is lost or made up, and Retry-After is exactly when a request fits."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from keylimit.backends import _window

WINDOW = 60.0
H = 28_333_334  # a window index near today's

limits_ = st.tuples(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 10**6))
counts = st.integers(0, 10**8).map(float)


@st.composite
def states(draw: st.DrawFn) -> tuple[_window.State, tuple[int, int, int]]:
    limits = draw(limits_)
    state = _window.new_state(H, limits)
    for d in range(3):
        state[1 + d] = draw(counts)  # may be far past the limit: a settlement put it there
        state[4 + d] = float(draw(st.integers(0, limits[d])))
        state[7 + d] = draw(counts) if state[1 + d] >= limits[d] else 0.0
    return state, limits


@given(states(), st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_rolling_in_steps_is_rolling_at_once(
    drawn: tuple[_window.State, tuple[int, int, int]], steps: list[int]
) -> None:
    state, _ = drawn
    at_once = list(state)
    _window.roll(at_once, H + sum(steps))
    index = H
    for step in steps:
        index += step
        _window.roll(state, index)
    assert state == at_once


@given(states(), st.integers(1, 200))
def test_what_is_charged_is_paid_back_window_by_window(
    drawn: tuple[_window.State, tuple[int, int, int]], windows: int
) -> None:
    state, limits = drawn
    owed = [state[1 + d] + state[7 + d] for d in range(3)]  # this window's count and the debt
    kept = [min(state[1 + d], limits[d]) for d in range(3)]  # what stays in this window's count
    paid = [0.0, 0.0, 0.0]
    for n in range(1, windows + 1):
        _window.roll(state, H + n)
        for d in range(3):
            assert state[1 + d] <= limits[d]
            assert state[1 + d] == limits[d] or state[7 + d] == 0  # a window in debt is full
            paid[d] += state[1 + d]
    for d in range(3):
        assert kept[d] + paid[d] + state[7 + d] == owed[d]


@settings(max_examples=300)
@given(states(), st.floats(0.0, 0.999), st.integers(0, 2), st.integers(1, 10**6))
def test_retry_after_is_when_the_request_fits(
    drawn: tuple[_window.State, tuple[int, int, int]], frac: float, dim: int, need: int
) -> None:
    state, limits = drawn
    need = min(need, limits[dim])
    wanted = tuple(need if d == dim else 0 for d in range(3))
    now = (H + frac) * WINDOW
    decision = _window.decide(list(state), limits, (0, 0, 0), wanted, now, WINDOW)  # type: ignore[arg-type]
    if decision.allowed:
        return
    eps = 1e-3

    def admitted(at: float) -> bool:
        later = list(state)
        _window.roll(later, math.floor(at / WINDOW))
        return _window.decide(later, limits, (0, 0, 0), wanted, at, WINDOW).allowed  # type: ignore[arg-type]

    assert admitted(now + decision.retry_after + eps)
    if decision.retry_after > eps:
        assert not admitted(now + decision.retry_after - eps)
