"""One contract for every limit backend: memory, Redis, Redis Cluster and the limits-library path."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from keylimit.backends import Decision, LimitBackend
from keylimit.backends._base import COMPLETION, PROMPT, REQUESTS
from keylimit.backends.memory import MemoryBackend
from tests.backends.conftest import T0, WINDOW

ONE = (1, 0, 0)
EPS = 0.01


async def spend(backend: LimitBackend, key: str, limits: tuple[int, int, int], n: int, now: float) -> None:
    for _ in range(n):
        assert (await backend.acquire(key, limits, ONE, ONE, now)).allowed


# --- sliding-window arithmetic


async def test_previous_window_is_weighted_by_its_overlap(backend: LimitBackend) -> None:
    limits = (10, 1000, 1000)
    await spend(backend, "acct", limits, 8, T0 + 10)

    quarter = await backend.peek("acct", limits, T0 + WINDOW + 15)
    assert quarter.used == (6.0, 0.0, 0.0)
    assert quarter.remaining == (4, 1000, 1000)
    three_quarters = await backend.peek("acct", limits, T0 + WINDOW + 45)
    assert three_quarters.used == (2.0, 0.0, 0.0)
    assert three_quarters.remaining == (8, 1000, 1000)


async def test_the_weighted_previous_window_refuses(backend: LimitBackend) -> None:
    limits = (10, 1000, 1000)
    await spend(backend, "acct", limits, 8, T0 + 10)
    now = T0 + WINDOW + 15  # 6.0 in use
    admitted = [(await backend.acquire("acct", limits, ONE, ONE, now)).allowed for _ in range(5)]
    assert admitted == [True, True, True, True, False]


async def test_two_windows_later_everything_is_forgotten(backend: LimitBackend) -> None:
    limits = (10, 1000, 1000)
    await backend.acquire("acct", limits, (10, 1000, 0), (10, 1000, 1), T0 + 59)
    later = T0 + 2 * WINDOW
    assert (await backend.peek("acct", limits, later)).used == (0.0, 0.0, 0.0)
    assert (await backend.acquire("acct", limits, (10, 1000, 0), (10, 1000, 1), later)).allowed


async def test_charge_may_differ_from_need(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    d = await backend.acquire("acct", limits, (1, 100, 0), (1, 100, 1), T0)
    assert d.allowed
    assert (await backend.peek("acct", limits, T0)).used == (1.0, 100.0, 0.0)
    # The prompt budget is spent: a request that needs prompt tokens is refused …
    refused = await backend.acquire("acct", limits, (1, 1, 0), (1, 1, 1), T0)
    assert (refused.allowed, refused.exceeded) == (False, PROMPT)
    # … one that needs none is not checked on that dimension.
    assert (await backend.acquire("acct", limits, ONE, (1, 0, 1), T0)).allowed


async def test_completion_needs_at_least_one_token_left(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    await backend.adjust("acct", (0, 0, 10), T0)
    refused = await backend.acquire("acct", limits, (1, 5, 0), (1, 5, 1), T0)
    assert (refused.allowed, refused.exceeded) == (False, COMPLETION)
    await backend.adjust("acct", (0, 0, -1), T0)
    assert (await backend.acquire("acct", limits, (1, 5, 0), (1, 5, 1), T0)).allowed


async def test_a_refusal_charges_no_dimension(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    assert (await backend.acquire("acct", limits, (1, 60, 0), (1, 60, 1), T0)).allowed
    refused = await backend.acquire("acct", limits, (1, 50, 0), (1, 50, 1), T0)
    assert (refused.allowed, refused.exceeded, refused.requested) == (False, PROMPT, (1, 50, 1))
    assert (await backend.peek("acct", limits, T0)).used == (1.0, 60.0, 0.0)


async def test_the_first_exceeded_dimension_is_reported(backend: LimitBackend) -> None:
    limits = (1, 100, 10)
    await backend.acquire("acct", limits, (1, 100, 10), ONE, T0)
    refused = await backend.acquire("acct", limits, (1, 1, 0), (1, 1, 1), T0)
    assert refused.exceeded == REQUESTS


async def test_an_admission_reports_use_remaining_and_reset(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    await backend.acquire("acct", limits, (2, 20, 0), (2, 20, 1), T0 + 5)
    d = await backend.acquire("acct", limits, (1, 30, 0), (1, 30, 1), T0 + 15)
    assert d == Decision(
        allowed=True,
        limits=limits,
        used=(2.0, 20.0, 0.0),
        remaining=(7, 50, 10),
        reset_at=T0 + WINDOW,
        retry_after=0.0,
        exceeded=None,
        requested=(1, 30, 1),
        window=WINDOW,
    )


async def test_a_refusal_reports_what_is_left(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    await backend.acquire("acct", limits, (3, 90, 0), ONE, T0 + 5)
    d = await backend.acquire("acct", limits, (1, 20, 0), (1, 20, 1), T0 + 15)
    assert (d.allowed, d.used, d.remaining, d.reset_at) == (False, (3.0, 90.0, 0.0), (7, 10, 10), T0 + WINDOW)


# --- retry_after is exactly when the refused request would fit


@pytest.mark.parametrize(
    ("spent", "spent_at", "need", "asked_at", "expected"),
    [
        # The previous window slides out later in this one: 10 requests at 10 % in…
        ((10, 0, 0), T0 + 30, (1, 0, 0), T0 + WINDOW, 6.0),
        # …and this window's own use only slides out in the next one.
        ((10, 0, 0), T0 + 30, (1, 0, 0), T0 + 30, 36.0),
        # Prompt tokens: 80 of 100 spent, 50 needed: at 37.5 % into the next window.
        ((1, 80, 0), T0, (1, 50, 1), T0 + 30, 52.5),
        # Both windows hold use: 6 in the previous, 4 in this one, 1 needed.
        ((6, 0, 0), T0 + 50, (1, 0, 0), None, 10.0),
    ],
)
async def test_retry_after_is_when_the_request_fits(
    backend: LimitBackend,
    spent: tuple[int, int, int],
    spent_at: float,
    need: tuple[int, int, int],
    asked_at: float | None,
    expected: float,
) -> None:
    limits = (10, 100, 10)
    await backend.acquire("acct", limits, spent, ONE, spent_at)
    if asked_at is None:
        asked_at = T0 + WINDOW
        await backend.acquire("acct", limits, (4, 0, 0), ONE, asked_at)
    d = await backend.acquire("acct", limits, need, need, asked_at)
    assert not d.allowed
    assert d.retry_after == pytest.approx(expected)
    assert not (await backend.acquire("acct", limits, need, need, asked_at + d.retry_after - EPS)).allowed
    assert (await backend.acquire("acct", limits, need, need, asked_at + d.retry_after + EPS)).allowed


async def test_a_request_over_the_limit_itself_waits_two_windows(backend: LimitBackend) -> None:
    d = await backend.acquire("acct", (10, 100, 10), (1, 101, 0), (1, 101, 1), T0 + 30)
    assert (d.allowed, d.exceeded, d.retry_after) == (False, PROMPT, 90.0)


# --- settlement and reading


async def test_adjust_adds_to_the_current_window_and_clamps_at_zero(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    await backend.acquire("acct", limits, (1, 30, 0), (1, 30, 1), T0)
    await backend.adjust("acct", (0, -50, 5), T0 + 1)
    assert (await backend.peek("acct", limits, T0 + 2)).used == (1.0, 0.0, 5.0)
    await backend.adjust("acct", (0, 20, 0), T0 + 3)
    assert (await backend.peek("acct", limits, T0 + 4)).used == (1.0, 20.0, 5.0)


async def test_adjust_of_an_unknown_identity(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    await backend.adjust("nobody", (-1, -5, -5), T0)
    assert (await backend.peek("nobody", limits, T0)).used == (0.0, 0.0, 0.0)
    await backend.adjust("somebody", (0, 7, 3), T0)
    assert (await backend.peek("somebody", limits, T0)).used == (0.0, 7.0, 3.0)


async def test_peek_charges_nothing(backend: LimitBackend) -> None:
    limits = (2, 100, 10)
    for _ in range(5):
        d = await backend.peek("acct", limits, T0)
        assert (d.allowed, d.used, d.remaining, d.requested) == (True, (0.0, 0.0, 0.0), limits, (0, 0, 0))
    await spend(backend, "acct", limits, 2, T0)
    assert (await backend.peek("acct", limits, T0)).remaining == (0, 100, 10)


async def test_identities_are_kept_apart_whatever_their_characters(backend: LimitBackend) -> None:
    limits = (10, 100, 10)
    keys = ["acct", "acct}", "{acct}", "%7Bacct%7D", "2001:db8::1", "10.0.0.1", "kl:rl:{x}", "ünï cödé", ""]
    for n, key in enumerate(keys, start=1):
        await backend.acquire(key, limits, (n, 0, 0), ONE, T0)
    for n, key in enumerate(keys, start=1):
        assert (await backend.peek(key, limits, T0)).used == (float(n), 0.0, 0.0), key


async def test_the_same_numbers_as_the_memory_backend(backend: LimitBackend) -> None:
    rng = random.Random(20240115)
    memory = MemoryBackend(WINDOW)
    limits = (20, 1000, 300)
    now = T0 + 7.123
    for _ in range(60):
        now += rng.uniform(0.0, 9.0)
        key = rng.choice(["a", "b"])
        if rng.random() < 0.2:
            delta = (0, rng.randint(-200, 100), rng.randint(-50, 150))
            await backend.adjust(key, delta, now)
            await memory.adjust(key, delta, now)
            continue
        prompt = rng.randint(0, 300)
        need = (1, prompt, 1)
        charge = (1, prompt, rng.choice([0, 1]))
        assert await backend.acquire(key, limits, charge, need, now) == await memory.acquire(
            key, limits, charge, need, now
        )
        assert await backend.peek(key, limits, now) == await memory.peek(key, limits, now)


# --- exactness under concurrency


async def test_concurrent_acquisitions_admit_exactly_the_limit(backend: LimitBackend) -> None:
    limits = (5, 1000, 1000)
    decisions = await asyncio.gather(*(backend.acquire("acct", limits, ONE, ONE, T0 + 1) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 5
    assert (await backend.peek("acct", limits, T0 + 1)).used == (5.0, 0.0, 0.0)


# --- debt: what a response costs past the limit is paid back by later windows

FREE = (60, 100_000, 10_000)


@pytest.mark.parametrize("dimension", [PROMPT, COMPLETION])
async def test_a_response_past_the_limit_fills_the_windows_that_pay_it_back(
    indebted: LimitBackend, dimension: int
) -> None:
    limit = FREE[dimension]
    assert (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 10)).allowed
    # It costs five limits' worth: one in its own window, four carried forward.
    await indebted.adjust("acct", tuple(5 * limit if d == dimension else 0 for d in range(3)), T0 + 20)  # type: ignore[arg-type]
    left = [(await indebted.peek("acct", FREE, T0 + n * WINDOW + 30)).remaining[dimension] for n in range(7)]
    assert left == [0, 0, 0, 0, 0, limit // 2, limit]


async def test_a_client_in_debt_is_refused_until_the_window_where_it_fits(indebted: LimitBackend) -> None:
    assert (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 10)).allowed
    await indebted.adjust("acct", (0, 0, 50_000), T0 + 20)
    refused = await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 2 * WINDOW + 5)
    assert (refused.allowed, refused.exceeded, refused.remaining[COMPLETION]) == (False, COMPLETION, 0)
    # Windows 1-4 each pay 10,000; window 5 starts with nothing, its previous window full:
    # one token fits once 1/10,000 of that window has slid out.
    assert refused.retry_after == pytest.approx(3 * WINDOW - 5 + WINDOW / 10_000)


@pytest.mark.parametrize(
    ("cost", "asked_at", "need"),
    [
        (50_000, T0 + 30, (1, 0, 1)),
        (50_000, T0 + WINDOW + 59, (1, 0, 1)),
        (50_000, T0 + 3 * WINDOW + 1, (1, 0, 9_000)),  # a reservation: fits later in window 5
        (10_500, T0 + 45, (1, 0, 1)),  # 500 carried: window 1 starts with 500, window 0 full
        (10_500, T0 + 45, (1, 0, 9_600)),  # …and 9,600 never fit beside 500 there: window 2
        (123_457, T0 + 7 * WINDOW + 13, (1, 0, 1)),
    ],
)
async def test_retry_after_in_debt_is_when_the_request_fits(
    indebted: LimitBackend, cost: int, asked_at: float, need: tuple[int, int, int]
) -> None:
    assert (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 10)).allowed
    await indebted.adjust("acct", (0, 0, cost), T0 + 20)
    d = await indebted.acquire("acct", FREE, ONE, need, asked_at)
    assert not d.allowed
    assert not (await indebted.acquire("acct", FREE, ONE, need, asked_at + d.retry_after - EPS)).allowed
    assert (await indebted.acquire("acct", FREE, ONE, need, asked_at + d.retry_after + EPS)).allowed


async def test_a_refund_pays_back_debt_first_and_never_below_zero(indebted: LimitBackend) -> None:
    assert (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 10)).allowed
    await indebted.adjust("acct", (0, 0, 25_000), T0 + 20)  # window 1 starts full, 5,000 still owed
    await indebted.adjust("acct", (0, 0, -8_000), T0 + WINDOW + 10)  # pays the 5,000, then 3,000 of window 1
    halfway = await indebted.peek("acct", FREE, T0 + 2 * WINDOW + 30)
    assert halfway.used[COMPLETION] == 3_500.0  # half of window 1's 7,000; nothing owed into window 2
    await indebted.adjust("acct", (0, 0, -1_000_000), T0 + 2 * WINDOW + 40)
    assert (await indebted.peek("acct", FREE, T0 + 3 * WINDOW + 40)).remaining == FREE


async def test_debt_is_paid_while_the_client_is_away(indebted: LimitBackend) -> None:
    assert (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 10)).allowed
    await indebted.adjust("acct", (0, 0, 50_000), T0 + 20)
    assert not (await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 3 * WINDOW + 30)).allowed
    back = await indebted.acquire("acct", FREE, ONE, (1, 0, 1), T0 + 9 * WINDOW)
    assert (back.allowed, back.used) == (True, (0.0, 0.0, 0.0))


async def test_debt_carries_the_same_numbers_as_the_memory_backend(indebted: LimitBackend) -> None:
    rng = random.Random(20261208)
    memory = MemoryBackend(WINDOW)
    limits = (20, 1000, 300)
    now = T0 + 7.123
    for _ in range(150):
        now += rng.choice([rng.uniform(0.0, 9.0), rng.uniform(0.0, 4 * WINDOW)])
        key = rng.choice(["a", "b"])
        if rng.random() < 0.3:
            delta = (0, rng.randint(-1500, 3000), rng.randint(-500, 1500))
            await indebted.adjust(key, delta, now)
            await memory.adjust(key, delta, now)
            continue
        prompt = rng.randint(0, 300)
        need = (1, prompt, rng.choice([1, 1, 200]))
        charge = (1, prompt, rng.choice([0, 1]))
        assert await indebted.acquire(key, limits, charge, need, now) == await memory.acquire(
            key, limits, charge, need, now
        )
        assert await indebted.peek(key, limits, now) == await memory.peek(key, limits, now)


async def test_debt_with_a_limit_of_zero_and_with_huge_numbers(indebted: LimitBackend) -> None:
    zero = (60, 0, 10_000)  # a plan with no prompt budget: only requests that need none pass
    assert (await indebted.acquire("acct", zero, ONE, (1, 0, 1), T0)).allowed
    await indebted.adjust("acct", (0, 500, 0), T0 + 1)
    later = await indebted.acquire("acct", zero, ONE, (1, 0, 1), T0 + 2 * WINDOW)
    assert (later.allowed, later.used) == (True, (0.0, 0.0, 0.0))  # nothing owed at a rate of zero
    refused = await indebted.acquire("acct", zero, ONE, (1, 1, 1), T0 + 2 * WINDOW + 15)
    assert (refused.allowed, refused.exceeded, refused.retry_after) == (False, PROMPT, 105.0)

    huge = (2**63, 2**60, 10_000)
    assert (await indebted.acquire("big", huge, ONE, (1, 1, 1), T0)).allowed
    await indebted.adjust("big", (0, 2**53, 2**53), T0 + 1)
    owing = await indebted.acquire("big", huge, ONE, (1, 1, 1), T0 + 5 * WINDOW)
    assert (owing.allowed, owing.exceeded, owing.remaining[COMPLETION]) == (False, COMPLETION, 0)
    assert math.isfinite(owing.retry_after)
    assert owing.retry_after > 10**11 * WINDOW  # 2**53 tokens at 10,000 a window
