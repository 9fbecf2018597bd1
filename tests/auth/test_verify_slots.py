"""The argon2 slots: never more than ``size`` at once; tokens that matched a check value first."""

from __future__ import annotations

import asyncio

import pytest

from keylimit.auth._verify_slots import VerifySlots


async def test_waiters_with_a_matched_check_go_first_each_queue_in_order() -> None:
    slots = VerifySlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def run(name: str, *, first: bool) -> None:
        async with slots.hold(first=first):
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(run("holder", first=False))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(run(name, first=name.startswith("checked")))
        for name in ("legacy 1", "checked 1", "legacy 2", "checked 2")
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["holder", "checked 1", "checked 2", "legacy 1", "legacy 2"]


async def test_never_more_than_size_and_a_cancelled_waiter_loses_no_slot() -> None:
    slots = VerifySlots(2)
    active = peak = 0
    gate = asyncio.Event()

    async def run() -> None:
        nonlocal active, peak
        async with slots.hold(first=False):
            active += 1
            peak = max(peak, active)
            try:
                await gate.wait()
            finally:
                active -= 1

    tasks = [asyncio.create_task(run()) for _ in range(6)]
    await asyncio.sleep(0)
    tasks[3].cancel()  # queued, never ran
    tasks[0].cancel()  # holding a slot
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, False, False, True, False, False]
    assert peak == 2
    assert repr(slots) == "VerifySlots(size=2, free=2, waiting=0)"


def test_size_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="verify_concurrency"):
        VerifySlots(0)
