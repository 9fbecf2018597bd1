"""No limit can be outrun by one big request: over any run of windows an account is
served at most its plan for that run, plus what the requests already in flight when it
was last admitted cost. Clients that always want more are driven by an injected clock
over a hundred windows, on every backend that carries debt."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from keylimit import ManualClock
from keylimit.backends import LimitBackend
from keylimit.backends._base import COMPLETION, PROMPT
from tests.backends.conftest import T0, WINDOW

FREE = (60, 100_000, 10_000)
WINDOWS = 100


@dataclass(slots=True)
class Run:
    served: list[list[int]] = field(default_factory=lambda: [[0] * (WINDOWS + 1) for _ in range(3)])
    """Tokens delivered per dimension and window (charged when the response ends)."""
    in_flight: list[list[int]] = field(default_factory=lambda: [[0] * (WINDOWS + 1) for _ in range(3)])
    """Per dimension and window: what the requests in flight just after the window's last
    admission cost (that one included), carried over from earlier windows when none."""
    admitted: int = 0
    early: int = 0
    """Refusals of a lone client that came back when Retry-After said."""


Cost = Callable[[random.Random], tuple[int, int]]
"""(reported prompt tokens, completion tokens) of one response."""


async def drive(backend: LimitBackend, *, clients: int, cost: Cost, duration: tuple[float, float], seed: int) -> Run:
    """``clients`` clients that each send a request as soon as they may: at once after a
    response, at Retry-After (rounded up to the millisecond, as the SDK waits) after a 429."""
    rng = random.Random(seed)
    clock = ManualClock(T0)
    run = Run()
    end = T0 + WINDOWS * WINDOW
    estimate = 100  # the prompt estimate; the response reports its own size
    flying: dict[int, tuple[int, int]] = {}
    events: list[tuple[float, int, int, str]] = [(T0 + rng.uniform(0, 1), n, n, "ask") for n in range(clients)]
    heapq.heapify(events)
    seq = clients
    while events:
        at, _, client, what = heapq.heappop(events)
        if at >= end:
            continue
        clock.set(at)
        window = math.floor((clock() - T0) / WINDOW)
        seq += 1
        if what == "done":
            prompt, completion = flying.pop(client)
            await backend.adjust("acct", (0, prompt - estimate, completion), clock())
            run.served[PROMPT][window] += prompt
            run.served[COMPLETION][window] += completion
            heapq.heappush(events, (at, seq, client, "ask"))
            continue
        d = await backend.acquire("acct", FREE, (1, estimate, 0), (1, estimate, 1), clock())
        if not d.allowed:
            if clients == 1 and what == "retry":
                run.early += 1
            heapq.heappush(events, (at + math.ceil(d.retry_after * 1000) / 1000 + 0.001, seq, client, "retry"))
            continue
        run.admitted += 1
        flying[client] = cost(rng)
        for dim in (PROMPT, COMPLETION):
            run.in_flight[dim][window] = sum(c[dim - 1] for c in flying.values())
        heapq.heappush(events, (at + rng.uniform(*duration), seq, client, "done"))
    for dim in (PROMPT, COMPLETION):
        for w in range(1, WINDOWS + 1):
            run.in_flight[dim][w] = run.in_flight[dim][w] or run.in_flight[dim][w - 1]
    return run


def assert_bounded(run: Run) -> None:
    for dim in (PROMPT, COMPLETION):
        limit = FREE[dim]
        served = run.served[dim]
        for last in range(WINDOWS):
            total = 0
            for first in range(last, -1, -1):
                total += served[first]
                windows = last - first + 1
                assert total <= windows * limit + run.in_flight[dim][last], (dim, first, last)


SCENARIOS = {
    # The case: 50,000-token answers on a 10,000-a-minute plan, one at a time.
    "one client, 50k answers": (1, lambda rng: (100, 50_000), (1.0, 20.0)),
    # The same with n = 8: 400,000 tokens an answer.
    "one client, n=8": (1, lambda rng: (100, 400_000), (1.0, 20.0)),
    # Eight clients at once, answers of any size that end in later windows, and prompts
    # whose reported size exceeds the estimate (by up to 150,000 on a 100,000 plan).
    "eight clients, mixed": (
        8,
        lambda rng: (rng.choice([100, 50, rng.randint(100, 150_000)]), rng.randint(0, 60_000)),
        (0.5, 150.0),
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_an_account_is_served_at_most_its_plan_plus_what_was_in_flight(
    indebted: LimitBackend, scenario: str
) -> None:
    clients, cost, duration = SCENARIOS[scenario]
    run = await drive(indebted, clients=clients, cost=cost, duration=duration, seed=11)
    assert_bounded(run)
    # Ten minutes serve the plan's ten minutes, give or take one answer: not five times it.
    first_ten = sum(run.served[COMPLETION][:10])
    biggest = max(run.in_flight[COMPLETION])
    assert first_ten <= 10 * FREE[COMPLETION] + biggest
    # And the account is not starved: the debt is paid back and it is served again.
    assert sum(run.served[COMPLETION]) >= (WINDOWS - 2) * FREE[COMPLETION] - biggest
    assert run.early == 0  # a lone client back at Retry-After is admitted
