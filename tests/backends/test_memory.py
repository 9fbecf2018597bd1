"""The memory backend's two generations: identities idle for two windows are forgotten
without a pass over all of them, and what is forgotten is freed a little per call."""

from __future__ import annotations

from keylimit.backends.memory import FREED_PER_CALL, MemoryBackend
from tests.backends.conftest import T0, WINDOW

LIMITS = (100, 10_000, 10_000)
ONE = (1, 0, 0)


async def use(backend: MemoryBackend, key: str, now: float) -> tuple[int, int, int]:
    return (await backend.acquire(key, LIMITS, ONE, ONE, now)).remaining


def forgotten(backend: MemoryBackend) -> int:
    """Entries dropped but not yet freed."""
    return sum(len(generation) for generation in backend._forgotten)


async def test_an_identity_used_in_the_previous_window_keeps_its_weight() -> None:
    backend = MemoryBackend(WINDOW)
    for _ in range(10):
        await use(backend, "a", T0)
    # A quarter into the next window, three quarters of the previous one still count.
    assert await use(backend, "a", T0 + WINDOW + WINDOW / 4) == (100 - 8 - 1, 10_000, 10_000)
    assert len(backend) == 1


async def test_identities_idle_for_two_windows_are_forgotten_and_count_from_zero() -> None:
    backend = MemoryBackend(WINDOW)
    for i in range(50):
        await use(backend, f"idle{i}", T0)
    await use(backend, "busy", T0 + WINDOW)
    assert len(backend) == 51  # the fifty still weigh on this window
    assert await use(backend, "busy", T0 + 2 * WINDOW) == (100 - 1 - 1, 10_000, 10_000)
    assert len(backend) == 1
    assert await use(backend, "idle0", T0 + 2 * WINDOW) == (99, 10_000, 10_000)


async def test_a_new_window_moves_no_entry_and_frees_the_forgotten_a_few_at_a_time() -> None:
    backend = MemoryBackend(WINDOW)
    n = 10 * FREED_PER_CALL
    for i in range(n):
        await use(backend, f"k{i}", T0)
    await use(backend, "busy", T0 + 2 * WINDOW)  # every k idle for two windows
    assert len(backend) == 1
    assert forgotten(backend) == n  # dropped as a whole, nothing freed yet
    for step in range(1, 10):
        await use(backend, "busy", T0 + 2 * WINDOW + step)
        assert forgotten(backend) == n - step * FREED_PER_CALL
    await use(backend, "busy", T0 + 2 * WINDOW + 10)
    assert forgotten(backend) == 0
    assert backend._forgotten == []


async def test_a_caller_whose_clock_lags_counts_in_the_newest_window() -> None:
    backend = MemoryBackend(WINDOW)
    await use(backend, "a", T0 + WINDOW)
    # Another caller's clock is a window behind: its request counts where the state is.
    assert await use(backend, "a", T0) == (98, 10_000, 10_000)
    assert await use(backend, "b", T0) == (99, 10_000, 10_000)
    assert await use(backend, "b", T0 + WINDOW) == (98, 10_000, 10_000)
    assert len(backend) == 2


async def test_peek_sees_both_generations_and_charges_nothing() -> None:
    backend = MemoryBackend(WINDOW)
    for _ in range(4):
        await use(backend, "a", T0)
    halfway = T0 + WINDOW + WINDOW / 2
    assert (await backend.peek("a", LIMITS, halfway)).remaining == (98, 10_000, 10_000)
    assert (await backend.peek("a", LIMITS, halfway)).remaining == (98, 10_000, 10_000)
    assert (await backend.peek("a", LIMITS, T0 + 2 * WINDOW)).remaining == (100, 10_000, 10_000)


async def test_aclose_forgets_everything() -> None:
    backend = MemoryBackend(WINDOW)
    await use(backend, "a", T0)
    await backend.aclose()
    assert len(backend) == 0
    assert await use(backend, "a", T0) == (99, 10_000, 10_000)


async def test_an_identity_in_debt_is_not_forgotten_however_long_it_is_idle() -> None:
    backend = MemoryBackend(WINDOW)
    free = (60, 100_000, 10_000)
    assert (await backend.acquire("owes", free, ONE, (1, 0, 1), T0)).allowed
    await backend.adjust("owes", (0, 0, 80_000), T0 + 1)  # seven windows of debt
    for step in range(1, 6 * 60):  # others' traffic, a request a second: generations move and are freed
        await use(backend, f"other{step % 3}", T0 + step)
        assert forgotten(backend) <= FREED_PER_CALL
    back = await backend.acquire("owes", free, ONE, (1, 0, 1), T0 + 6 * WINDOW + 30)
    assert (back.allowed, back.remaining[2]) == (False, 0)
    assert back.used[2] == 15_000.0  # windows 5 and 6 both full: 10,000 * 0.5 + 10,000
    assert (await backend.acquire("owes", free, ONE, (1, 0, 1), T0 + 9 * WINDOW)).allowed
    assert len(backend) == 1  # the others, idle for two windows, were forgotten
