"""Choosing a backend by URL, and the limits-library path's own failures."""

from __future__ import annotations

import pytest

from keylimit import ConfigurationError, LimitStorageUnavailable
from keylimit.backends import open_limit_backend
from keylimit.backends.generic import LimitsBackend
from keylimit.backends.memory import MemoryBackend
from keylimit.backends.redis import RedisBackend
from tests._redis import free_port
from tests.backends.conftest import T0, WINDOW

ONE = (1, 0, 0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", MemoryBackend),
        ("redis://127.0.0.1:6379/0", RedisBackend),
        ("rediss://127.0.0.1:6379/0", RedisBackend),
        ("redis+cluster://127.0.0.1:7000", RedisBackend),
        # Anything else goes through the limits library, with or without its async+ prefix.
        ("async+memory://", LimitsBackend),
        ("redis+sentinel://127.0.0.1:26379/mymaster", LimitsBackend),
        ("async+redis://127.0.0.1:6379", LimitsBackend),
    ],
)
async def test_the_url_scheme_chooses_the_backend(url: str, expected: type) -> None:
    backend = open_limit_backend(url, WINDOW)
    assert type(backend) is expected
    assert backend.window == WINDOW
    await backend.aclose()


@pytest.mark.parametrize("url", ["nosuch://user:hunter2@example.com/", "carrier-pigeon://", "memory+x://"])
def test_an_unknown_scheme_names_the_setting_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="KEYLIMIT_LIMITS_URL") as caught:
        open_limit_backend(url, WINDOW)
    assert "hunter2" not in str(caught.value)


def test_the_repr_hides_the_password() -> None:
    backend = LimitsBackend.from_url("redis+sentinel://:hunter2@127.0.0.1:26379/mymaster", WINDOW)
    assert "hunter2" not in repr(backend)
    assert "127.0.0.1:26379" in repr(backend)


async def test_a_storage_that_does_not_answer_is_unavailable() -> None:
    backend = LimitsBackend.from_url(f"async+redis://:hunter2@127.0.0.1:{free_port()}/0", WINDOW)
    for call in (
        backend.acquire("acct", (5, 100, 10), ONE, ONE, T0),
        backend.adjust("acct", (0, -5, 5), T0),
        backend.peek("acct", (5, 100, 10), T0),
        backend.ping(),
    ):
        with pytest.raises(LimitStorageUnavailable) as caught:
            await call
        assert "hunter2" not in str(caught.value)
