"""A bug in a part the limiter calls (a backend, a token counter) is logged once with its
traceback, key material redacted, and the request is answered without a 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from keylimit import ManualClock, Plans
from keylimit.backends.memory import MemoryBackend
from keylimit.ratelimit._middleware import RateLimitMiddleware

from ._apps import Recorder, chat_reply
from ._asgi import call, principal

KEY = "forii_sk_AbCdEfGhIjKl_" + "x" * 38


class BuggyBackend(MemoryBackend):
    async def acquire(self, *args: Any) -> Any:
        raise TypeError(f"cannot add str and int while counting {KEY}")


class BuggyCounter:
    def count_prompt(self, body: Any) -> int:
        raise TypeError(f"bad message shape near {KEY}")

    def count_text(self, text: str) -> int:
        return len(text) // 4


def bug_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("keylimit") and r.levelno >= logging.ERROR]


async def test_a_bug_in_the_backend_is_answered_503_and_logged_once_with_its_traceback(
    clock: ManualClock, plans: Plans, caplog: pytest.LogCaptureFixture
) -> None:
    app = Recorder()
    mw = RateLimitMiddleware(app, limits=BuggyBackend(60.0), clock=clock, plans=plans)
    with caplog.at_level(logging.INFO, logger="keylimit"):
        for _ in range(2):
            r = await call(mw, "GET", "/v1/models", who=principal())
            assert r.status == 503
            assert r.json()["error"]["code"] == "service_unavailable"
    assert app.calls == 0
    [record] = bug_records(caplog)
    text = caplog.text
    assert "Traceback" in text
    assert "TypeError" in text
    assert "acquire" in text
    assert KEY not in text
    assert record.exc_info is None or "x" * 38 not in str(record.exc_info[1])


async def test_a_bug_in_the_token_counter_charges_the_body_by_its_length_and_serves_it(
    backend: MemoryBackend, clock: ManualClock, plans: Plans, caplog: pytest.LogCaptureFixture
) -> None:
    app = Recorder(reply=chat_reply("ok", None))
    mw = RateLimitMiddleware(app, limits=backend, clock=clock, plans=plans, token_counter=BuggyCounter())
    body = {"model": "m", "messages": [{"role": "user", "content": "hello " * 40}]}
    with caplog.at_level(logging.INFO, logger="keylimit"):
        first = await call(mw, body=body, who=principal())
        second = await call(mw, body=body, who=principal())
    assert (first.status, second.status) == (200, 200)
    assert app.calls == 2
    assert second.int_header("x-ratelimit-remaining-prompt-tokens") < 1_000 - 2 * 40
    assert len(bug_records(caplog)) == 1
    assert "Traceback" in caplog.text
    assert KEY not in caplog.text
