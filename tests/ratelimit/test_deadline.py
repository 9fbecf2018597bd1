"""Body-read deadlines: one timer for every read in flight, late reads cancelled, others untouched.

Driven through ``receive_body``, the deadlines' one caller."""

from __future__ import annotations

import asyncio

import pytest

from keylimit._types import Message
from keylimit.http._body import receive_body
from keylimit.http._deadline import DeadlineExceeded, Deadlines

LIMIT = 0.05


async def never() -> Message:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


class Deadline:
    """``deadlines`` with a ``run`` that reads a body through ``receive_body``."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines

    async def run(self, receive: object) -> int:
        body = await receive_body(receive, 1_000, self.deadlines)  # type: ignore[arg-type]
        assert body is not None
        return int(body)


def answer(gate: asyncio.Event, value: int) -> object:
    async def receive() -> Message:
        await gate.wait()
        return {"type": "http.request", "body": b"%d" % value, "more_body": False}

    return receive


async def test_a_read_that_finishes_in_time_returns_its_result_and_leaves_nothing_behind() -> None:
    deadlines = Deadlines(LIMIT)
    gate = asyncio.Event()
    gate.set()
    assert await Deadline(deadlines).run(answer(gate, 7)) == 7
    assert len(deadlines) == 0


async def test_a_late_read_is_cancelled_and_reported() -> None:
    deadlines = Deadlines(LIMIT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await Deadline(deadlines).run(never)
    assert loop.time() - started >= LIMIT
    assert len(deadlines) == 0


async def test_only_the_late_reads_of_many_are_cancelled() -> None:
    deadlines = Deadlines(LIMIT)
    gate = asyncio.Event()
    late = [asyncio.create_task(Deadline(deadlines).run(never)) for _ in range(5)]
    on_time = [asyncio.create_task(Deadline(deadlines).run(answer(gate, n))) for n in range(5)]
    gate.set()
    assert await asyncio.gather(*on_time) == [0, 1, 2, 3, 4]
    done, _ = await asyncio.wait(late, timeout=10)
    assert done == set(late)
    assert all(isinstance(t.exception(), DeadlineExceeded) for t in late)
    assert len(deadlines) == 0


async def test_a_read_begun_later_gets_its_own_full_time() -> None:
    deadlines = Deadlines(LIMIT)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(Deadline(deadlines).run(never))
    with pytest.raises(DeadlineExceeded):
        await first
    began = loop.time()
    with pytest.raises(DeadlineExceeded):
        await Deadline(deadlines).run(never)
    assert loop.time() - began >= LIMIT


async def test_a_cancellation_from_outside_is_not_taken_for_a_deadline() -> None:
    deadlines = Deadlines(60.0)
    task = asyncio.create_task(Deadline(deadlines).run(never))
    await asyncio.sleep(0)  # let it start waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_a_read_that_fails_passes_its_error_on() -> None:
    deadlines = Deadlines(LIMIT)

    async def broken() -> Message:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        await Deadline(deadlines).run(broken)
    assert len(deadlines) == 0


def test_state_starts_afresh_on_another_event_loop() -> None:
    deadlines = Deadlines(LIMIT)
    for _ in range(2):
        with pytest.raises(DeadlineExceeded):
            asyncio.run(Deadline(deadlines).run(never))


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(0)
