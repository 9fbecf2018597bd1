"""`vllm serve MODEL --middleware keylimit.Protect`: an app shaped like vLLM's OpenAI server, the
middleware loaded the way vLLM loads it, configuration from the environment alone."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from keylimit._types import ASGIApp
from tests.e2e._process import CHEAP_ARGON2
from tests.proxy._servers import ServerThread

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
WORDS = ["The", " quick", " brown", " fox", " jumps"]
COMPLETION_TOKENS = 7  # the model's tokenizer, not keylimit's estimate of the text (5)
router = APIRouter()


@router.get("/health")
async def health() -> Response:
    return Response(status_code=200)


@router.get("/v1/models")
async def models() -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm"}]})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = await request.json()
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": COMPLETION_TOKENS}
    base: dict[str, Any] = {"id": "chatcmpl-vllm", "created": int(time.time()), "model": MODEL}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(WORDS)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[str]:
        for i, word in enumerate(WORDS):
            choice = {"index": 0, "delta": {"content": word}, "finish_reason": "stop" if i == 4 else None}
            chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            yield f"data: {json.dumps(chunk)}\n\n"
        if include_usage:
            yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def build_app(middleware: list[str]) -> FastAPI:
    """As vLLM's ``build_app``: routes on a router, then each ``--middleware`` import path."""
    app = FastAPI()
    app.include_router(router)
    for path in middleware:
        module_path, object_name = path.rsplit(".", 1)
        imported = getattr(importlib.import_module(module_path), object_name)
        if inspect.isclass(imported):
            app.add_middleware(imported)
        elif inspect.iscoroutinefunction(imported):
            app.middleware("http")(imported)
        else:
            raise ValueError(f"Invalid middleware {path}. Must be a function or a class.")
    return app


@pytest.fixture
def vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[[ASGIApp], ServerThread]) -> str:
    for name in [n for n in os.environ if n.startswith("KEYLIMIT_")]:
        monkeypatch.delenv(name)
    for name, value in {
        **CHEAP_ARGON2,
        "KEYLIMIT_KEYS_URL": f"sqlite:///{tmp_path}/keys.db",
        "KEYLIMIT_ADMIN_TOKEN": "vllm-admin",
        "KEYLIMIT_PLAN_FREE": "4,100000,10000",
    }.items():
        monkeypatch.setenv(name, value)
    return serve(build_app(["keylimit.Protect"])).url


def new_key(url: str, account: str) -> str:
    created = httpx.post(
        f"{url}/v1/accounts/{account}/apiKeys", json={"name": "vllm"}, headers={"Authorization": "Bearer vllm-admin"}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def sse_data(text: str) -> list[Any]:
    blocks = [b.removeprefix("data: ") for b in text.split("\n\n") if b]
    return [b if b == "[DONE]" else json.loads(b) for b in blocks]


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say five words"}]}


def test_health_is_open_and_everything_else_needs_a_key(vllm: str) -> None:
    health = httpx.get(vllm + "/health")
    assert health.status_code == 200
    assert not any(name.startswith("x-ratelimit") for name in health.headers)
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]:
        refused = httpx.request(method, vllm + path, json=CHAT)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"


def test_a_key_gets_200_and_rate_limit_headers(vllm: str) -> None:
    key = new_key(vllm, "acme")
    answer = httpx.post(vllm + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "The quick brown fox jumps"
    assert answer.headers["x-ratelimit-limit-requests"] == "4"
    assert answer.headers["x-ratelimit-remaining-requests"] == "3"
    assert answer.headers["x-ratelimit-limit-completion-tokens"] == "10000"


def test_streaming_without_include_usage_strips_the_usage_it_asked_for_and_charges_it(vllm: str) -> None:
    auth = {"Authorization": f"Bearer {new_key(vllm, 'acme')}"}
    for _ in range(3):  # a minute boundary between the two requests would blur the difference
        stream = httpx.post(vllm + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth)
        after = httpx.get(vllm + "/v1/models", headers=auth)
        if stream.headers["x-ratelimit-reset"] == after.headers["x-ratelimit-reset"]:
            break
    assert stream.status_code == 200
    events = sse_data(stream.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "The quick brown fox jumps"
    assert all("usage" not in c for c in chunks)
    charged = int(stream.headers["x-ratelimit-remaining-completion-tokens"]) - int(
        after.headers["x-ratelimit-remaining-completion-tokens"]
    )
    assert charged == COMPLETION_TOKENS  # from the usage keylimit asked for, then stripped


def test_streaming_with_include_usage_keeps_it(vllm: str) -> None:
    auth = {"Authorization": f"Bearer {new_key(vllm, 'acme')}"}
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_data(httpx.post(vllm + "/v1/chat/completions", json=body, headers=auth).text)
    assert events[-2]["usage"]["completion_tokens"] == COMPLETION_TOKENS


def test_429_after_the_plans_limit(vllm: str) -> None:
    auth = {"Authorization": f"Bearer {new_key(vllm, 'acme')}"}
    statuses = [httpx.get(vllm + "/v1/models", headers=auth).status_code for _ in range(5)]
    assert statuses[:4] == [200, 200, 200, 200]
    # A minute boundary during the first four could let a fifth in; it cannot let a fourth out.
    if statuses[4] == 200:
        statuses.append(httpx.get(vllm + "/v1/models", headers=auth).status_code)
    assert statuses[-1] == 429
    refused = httpx.get(vllm + "/v1/models", headers=auth)
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"],
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert int(refused.headers["retry-after"]) >= 1


def test_metrics_and_version_are_protected_unless_opened(vllm: str) -> None:
    for path in ("/metrics", "/version"):
        assert httpx.get(vllm + path).status_code == 401
