from __future__ import annotations

import pytest

from keylimit.ratelimit._headers import openai_duration


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # below a second: milliseconds, rounded up
        (0, "0s"),
        (-1, "0s"),
        (0.12, "120ms"),
        (0.0001, "1ms"),
        # seconds, with a fraction when there is one
        (1, "1s"),
        (1.5, "1.5s"),
        (47.25, "47.25s"),
        # minutes and hours always show their smaller units
        (60, "1m0s"),
        (360, "6m0s"),
        (90.5, "1m30.5s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_openai_duration(seconds, expected):
    assert openai_duration(seconds) == expected.encode()
