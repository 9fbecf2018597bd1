"""What a client in debt sees, through Protect with the official SDK: an answer that cost
five times the plan's completion tokens leaves the account refused, Remaining 0, until
the window where the debt is paid back, and Retry-After says when that is."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keylimit import ManualClock

from .conftest import START, MakeProtect, make_key

WINDOW = 60.0
COMPLETION_LIMIT = 10_000  # the free plan's, a minute


async def long_answer(request: Request) -> JSONResponse:
    """An answer of 50,000 completion tokens, whatever was asked."""
    body = await request.json()
    return JSONResponse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "…"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 50_000, "total_tokens": 50_012},
        }
    )


@pytest.fixture
async def sdk(make_protect: MakeProtect) -> AsyncIterator[openai.AsyncOpenAI]:
    protect = make_protect(Starlette(routes=[Route("/v1/chat/completions", long_answer, methods=["POST"])]))
    token = await make_key(protect)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(protect), base_url="http://testserver/v1")
    async with openai.AsyncOpenAI(api_key=token, base_url="http://testserver/v1", http_client=http, max_retries=0) as c:
        yield c


async def ask(sdk: openai.AsyncOpenAI) -> Any:
    return await sdk.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "Write a very long story."}], max_tokens=50_000
    )


async def refusal(sdk: openai.AsyncOpenAI) -> httpx.Response:
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(sdk)
    return caught.value.response


async def test_a_client_in_debt_is_told_how_long_it_must_wait(sdk: openai.AsyncOpenAI, clock: ManualClock) -> None:
    assert START % WINDOW == 0
    first = await ask(sdk)
    assert first.parse().usage.completion_tokens == 50_000
    assert int(first.headers["x-ratelimit-remaining-completion-tokens"]) == COMPLETION_LIMIT

    # 40,000 tokens past the limit: windows 1 to 4 each pay back 10,000 and start full;
    # window 5 starts empty, and one token fits once 1/10,000 of window 4 has slid out.
    fits_at = START + 5 * WINDOW + WINDOW / COMPLETION_LIMIT
    for asked_at in (START + 5, START + 2 * WINDOW + 30, START + 4 * WINDOW + 59):
        clock.set(asked_at)
        refused = await refusal(sdk)
        assert refused.json()["error"]["type"] == "tokens"
        assert int(refused.headers["x-ratelimit-remaining-completion-tokens"]) == 0
        assert int(refused.headers["retry-after"]) == math.ceil(fits_at - asked_at)
        assert int(refused.headers["retry-after-ms"]) == pytest.approx((fits_at - asked_at) * 1000, abs=1)

    clock.set(fits_at + 0.001)
    again = await ask(sdk)
    assert again.http_response.status_code == 200
