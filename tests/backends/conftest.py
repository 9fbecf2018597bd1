from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keylimit.backends import LimitBackend, open_limit_backend

WINDOW = 60.0
T0 = 1_700_000_040.0
"""The start of a window (a multiple of 60)."""

KINDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.cluster),
    "generic",
    pytest.param("generic-redis", marks=pytest.mark.redis),
]


def backend_url(request: pytest.FixtureRequest, kind: str) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    if kind == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    if kind == "generic":
        return "async+memory://"
    assert kind == "generic-redis"
    return str(request.getfixturevalue("redis_url")).replace("redis://", "async+redis://")


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[LimitBackend]:
    """Every limit backend, opened by URL as the configuration would."""
    backend = open_limit_backend(backend_url(request, request.param), WINDOW)
    yield backend
    await backend.aclose()


DEBT_KINDS = [kind for kind in KINDS if "generic" not in str(getattr(kind, "values", (kind,))[0])]
"""The backends that carry debt: all but the limits-library path, which documents why not
(plain counters of an arbitrary storage cannot hold it atomically)."""


@pytest.fixture(params=DEBT_KINDS)
async def indebted(request: pytest.FixtureRequest) -> AsyncIterator[LimitBackend]:
    """Every backend that carries debt, opened by URL as the configuration would."""
    backend = open_limit_backend(backend_url(request, request.param), WINDOW)
    yield backend
    await backend.aclose()
