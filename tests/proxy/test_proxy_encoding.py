"""``keylimit proxy`` in front of an upstream that compresses: ``Protect(proxy_app(...))`` under
uvicorn, the official ``openai`` SDK as the client (it accepts gzip and deflate). The account
is charged the usage the upstream reported, whatever coding carried it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from keylimit import Argon2Params, Config, Limits, ManualClock, Protect
from keylimit._types import ASGIApp
from keylimit.proxy import proxy_app
from tests.proxy._servers import ServerThread

ADMIN = "proxy-encoding-admin-token"
LIMITS = Limits(1_000, 1_000_000, 100_000)
PROMPT, COMPLETION = 17, 900
USAGE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}
WORDS = [f"token{i} " for i in range(60)]

Serve = Callable[[ASGIApp], ServerThread]


def completion_chunk(text: str | None, usage: Any = ...) -> dict[str, Any]:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    out: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out["choices"] = choices
    if usage is not ...:
        out["usage"] = usage
    return out


def events(include_usage: bool) -> Iterator[bytes]:
    for word in WORDS:
        yield b"data: " + json.dumps(completion_chunk(word, None if include_usage else ...)).encode() + b"\n\n"
    if include_usage:
        yield b"data: " + json.dumps(completion_chunk(None, USAGE)).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def completions(request: Request) -> StarletteResponse:
    body = await request.json()
    request.app.state.accepted.append(request.headers.get("accept-encoding"))
    if body.get("stream"):
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        if request.url.path.startswith("/forced"):  # gzip whatever the request accepts
            return StarletteResponse(
                gzip.compress(b"".join(events(include))),
                media_type="text/event-stream",
                headers={"content-encoding": "gzip"},
            )
        return StreamingResponse(events(include), media_type="text/event-stream")
    message = {"role": "assistant", "content": "".join(WORDS)}
    reply = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    return JSONResponse(reply)


async def models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": []})


def upstream_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/forced/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
    app.state.accepted = []
    return app


@pytest.fixture
def upstream(serve: Serve) -> tuple[Starlette, str]:
    app = upstream_app()
    return app, serve(GZipMiddleware(app, minimum_size=0, exclude_content_types=())).url


@pytest.fixture
async def keylimit_proxy(upstream: tuple[Starlette, str], serve: Serve) -> tuple[str, str]:
    """The URL of ``Protect(proxy_app(upstream))`` under uvicorn, and a key for it."""
    config = Config(
        keys_url="memory://",
        argon2=Argon2Params(time_cost=1, memory_cost=8, parallelism=1),
        admin_token=ADMIN,
        plans={"free": LIMITS},
        clock=ManualClock(1_700_000_040.0),
    )
    url = serve(Protect(proxy_app(upstream[1]), config)).url
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        created = await http.post(
            "/v1/accounts/acct/apiKeys", json={"name": "sdk"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert created.status_code == 201, created.text
    return url, created.json()["key"]


async def charged(url: str, key: str) -> tuple[int, int]:
    """Prompt and completion tokens charged so far, from the headers of a request that carries none."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    return (
        LIMITS.prompt_tokens - int(r.headers["x-ratelimit-remaining-prompt-tokens"]),
        LIMITS.completion_tokens - int(r.headers["x-ratelimit-remaining-completion-tokens"]),
    )


def sdk(url: str, key: str, prefix: str = "") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{url}{prefix}/v1", max_retries=0, timeout=10)


MESSAGES: Any = [{"role": "user", "content": "Count to sixty."}]


async def test_a_gzipped_completion_is_charged_its_usage(
    keylimit_proxy: tuple[str, str], upstream: tuple[Starlette, str]
) -> None:
    url, key = keylimit_proxy
    async with sdk(url, key) as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["content-encoding"] == "gzip"  # the upstream's bytes, passed through
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(WORDS)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == COMPLETION
    assert upstream[0].state.accepted == ["gzip, deflate"]
    assert await charged(url, key) == (PROMPT, COMPLETION)


async def test_a_gzipped_stream_that_asked_for_usage_is_charged_it(keylimit_proxy: tuple[str, str]) -> None:
    url, key = keylimit_proxy
    async with sdk(url, key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        assert raw.headers["content-encoding"] == "gzip"
        chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == COMPLETION
    assert await charged(url, key) == (PROMPT, COMPLETION)


@pytest.mark.parametrize("prefix", ["", "/forced"])
async def test_a_stream_whose_usage_keylimit_strips_is_charged_it_and_reaches_the_client_clean(
    keylimit_proxy: tuple[str, str], upstream: tuple[Starlette, str], prefix: str
) -> None:
    url, key = keylimit_proxy
    async with sdk(url, key, prefix) as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES, stream=True)
        assert "content-encoding" not in raw.headers  # asked for identity; decoded when gzip came anyway
        chunks = [c async for c in raw.parse()]
    assert upstream[0].state.accepted == ["identity"]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(WORDS)
    assert await charged(url, key) == (PROMPT, COMPLETION)
