"""The whole stack through ``keylimit.Protect``: an inner app, Configs with cheap argon2 and a
manual clock, and a factory that closes every Protect it made."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from keylimit import Argon2Params, Config, Limits, ManualClock, Protect
from keylimit._runtime import key_manager
from keylimit.demo import MODEL_ID, demo_model_app

CHEAP = Argon2Params(time_cost=1, memory_cost=8, parallelism=1)
ADMIN = "admin-session-token"
# A minute boundary plus 10 s: windows are aligned to the clock, so every header is exact.
START = 1_700_000_040.0
TINY = Limits(5, 100_000, 10_000)


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"account": request.user.account_id})


async def fails(request: Request) -> Response:
    return PlainTextResponse("upstream broke", status_code=500)


async def rejects(request: Request) -> Response:
    raise HTTPException(400, "bad request from the app")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    """What Protect guards: the demo model at ``/inference/v1`` and a few plain routes."""
    return Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/fails", fails),
            Route("/rejects", rejects),
            Route("/health", health),
            Mount("/inference/v1", demo_model_app()),
        ]
    )


def config(**settings: Any) -> Config:
    defaults: dict[str, Any] = {"keys_url": "memory://", "argon2": CHEAP, "admin_token": ADMIN}
    return Config(**{**defaults, **settings})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": prompt}], **extra}


def remaining(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return (
        int(h["x-ratelimit-remaining-requests"]),
        int(h["x-ratelimit-remaining-prompt-tokens"]),
        int(h["x-ratelimit-remaining-completion-tokens"]),
    )


def limits(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return (
        int(h["x-ratelimit-limit-requests"]),
        int(h["x-ratelimit-limit-prompt-tokens"]),
        int(h["x-ratelimit-limit-completion-tokens"]),
    )


def assert_openai_error(response: httpx.Response, status: int, type_: str, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = json.loads(response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code)
    assert error["message"]
    return dict(error)


async def make_key(protect: Protect, account: str = "acct_1", plan: str | None = None) -> str:
    """A full-scope key of ``account`` (on ``plan``), made through the Protect's own store."""
    manager = key_manager(protect.config, protect.store)
    if plan is not None:
        await manager.set_plan(account, plan)
    _, token = await manager.create_key(account, "integration")
    return token


MakeProtect = Callable[..., Protect]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def make_protect(clock: ManualClock) -> AsyncIterator[MakeProtect]:
    """``make_protect(**config settings)`` → a Protect over ``inner_app()``; all closed at the end."""
    made: list[Protect] = []

    def make(app: Any = None, **settings: Any) -> Protect:
        protect = Protect(app if app is not None else inner_app(), config(clock=clock, **settings))
        made.append(protect)
        return protect

    yield make
    for protect in made:
        await protect.aclose()
