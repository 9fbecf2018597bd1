from __future__ import annotations

import pytest

from keylimit import Limits, ManualClock, Plans
from keylimit.backends.memory import MemoryBackend

from ._asgi import START

SMALL = Limits(10, 1_000, 100)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(60.0)


@pytest.fixture
def plans() -> Plans:
    return Plans({"free": SMALL, "pro": Limits(6_000, 10_000_000, 1_000_000), "enterprise": None})
