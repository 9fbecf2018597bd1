"""X-Ratelimit-* on every response to an authenticated request, through Protect: streams, app
errors and refusals alike; none on the management API."""

from __future__ import annotations

import json
import math
import re

import httpx
import pytest

from keylimit import ManualClock

from .conftest import ADMIN, START, TINY, MakeProtect, assert_openai_error, bearer, chat, client, make_key

RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset",
    "x-ratelimit-limit-prompt-tokens",
    "x-ratelimit-remaining-prompt-tokens",
    "x-ratelimit-limit-completion-tokens",
    "x-ratelimit-remaining-completion-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
}
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def seconds(duration: str) -> float:
    """An OpenAI-style duration (``120ms``, ``1.5s``, ``1m2s``) in seconds."""
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    match = _DURATION.fullmatch(duration)
    assert duration
    assert match is not None, duration
    hours, minutes, secs = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def assert_rate_limit_headers(response: httpx.Response) -> None:
    assert set(response.headers) >= RATE_LIMIT_HEADERS, sorted(response.headers)
    assert int(response.headers["x-ratelimit-limit-requests"]) == 60


async def test_a_stream_carries_the_headers_on_its_start(make_protect: MakeProtect) -> None:
    protect = make_protect()
    token = await make_key(protect)
    async with client(protect) as c:
        request = chat("Tell me a story.", stream=True)
        async with c.stream("POST", "/inference/v1/chat/completions", json=request, headers=bearer(token)) as r:
            # Checked before a byte of the body is read: they came with http.response.start.
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert_rate_limit_headers(r)
            assert int(r.headers["x-ratelimit-remaining-requests"]) == 59
            body = (await r.aread()).decode()
    events = [block.removeprefix("data: ") for block in body.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    assert all("choices" in json.loads(e) for e in events[:-1])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/fails", 500),  # the app answers 500 itself
        ("/rejects", 400),  # the app raises HTTPException(400)
        ("/nowhere", 404),  # the router's own 404
    ],
)
async def test_app_errors_carry_the_headers(make_protect: MakeProtect, path: str, status: int) -> None:
    protect = make_protect()
    token = await make_key(protect)
    async with client(protect) as c:
        response = await c.get(path, headers=bearer(token))
    assert response.status_code == status
    assert_rate_limit_headers(response)


async def test_429_says_when_to_retry_consistently_and_truthfully(
    make_protect: MakeProtect, clock: ManualClock
) -> None:
    protect = make_protect(plans={"free": TINY})
    token = await make_key(protect)
    async with client(protect) as c:
        for _ in range(5):
            assert (await c.get("/whoami", headers=bearer(token))).status_code == 200
        refused = await c.get("/whoami", headers=bearer(token))
        assert_openai_error(refused, 429, "requests", "rate_limit_exceeded")
        assert set(refused.headers) >= RATE_LIMIT_HEADERS

        h = refused.headers
        retry_after = h["retry-after"]
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
        retry_ms = int(h["retry-after-ms"])
        assert int(retry_after) == math.ceil(retry_ms / 1000)
        assert seconds(h["x-ratelimit-reset-requests"]) == retry_ms / 1000
        reset = int(h["x-ratelimit-reset"])
        assert reset % 60 == 0
        assert START < reset <= START + 60  # the end of this minute
        # Sliding windows: the five requests weigh on the next minute too, but at most two windows.
        assert reset - START < int(retry_after) <= reset + 60 - START

        clock.advance(int(retry_after) - 1)
        assert (await c.get("/whoami", headers=bearer(token))).status_code == 429
        clock.advance(1)
        assert (await c.get("/whoami", headers=bearer(token))).status_code == 200


async def test_management_responses_carry_no_rate_limit_headers(make_protect: MakeProtect) -> None:
    protect = make_protect()
    token = await make_key(protect)
    admin = bearer(ADMIN)
    async with client(protect) as c:
        answers = [
            await c.post("/v1/accounts/acct_1/apiKeys", json={"name": "another"}, headers=admin),
            await c.get("/v1/accounts/acct_1/apiKeys", headers=admin),
            await c.get("/v1/accounts/acct_1/apiKeys", headers=bearer(token)),  # a full-scope key of the account
            await c.get("/v1/accounts/acct_1", headers=admin),
            await c.put("/v1/accounts/acct_1", json={"plan": "pro"}, headers=admin),
            await c.get("/v1/accounts/acct_1/apiKeys", headers=bearer("not-the-admin-token")),
        ]
        after = await c.get("/whoami", headers=bearer(token))
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200, 401]
    for answer in answers:
        assert not [name for name in answer.headers if name.startswith("x-ratelimit")], answer.headers
    # None of them was counted against the account (the plan changed to pro on the way).
    assert int(after.headers["x-ratelimit-remaining-requests"]) == 6_000 - 1
