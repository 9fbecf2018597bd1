"""The whole stack through ``keylimit.Protect``: an inner app, Configs with cheap argon2 and a
manual clock, and a factory that closes every Protect it made."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from keylimit import Argon2Params, Config, Limits, ManualClock, Protect
from keylimit.config._build import key_manager
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


# --- the process environment, the CLI and lifespan.

CHEAP_ENV = {
    "KEYLIMIT_ARGON2_TIME_COST": str(CHEAP.time_cost),
    "KEYLIMIT_ARGON2_MEMORY_COST": str(CHEAP.memory_cost),
    "KEYLIMIT_ARGON2_PARALLELISM": str(CHEAP.parallelism),
}


@pytest.fixture
def keylimit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """This process's environment with only these ``KEYLIMIT_*`` settings: a SQLite file in
    ``tmp_path``, cheap argon2. Returned as a full environment for subprocesses."""
    for name in list(os.environ):
        if name.startswith("KEYLIMIT_"):
            monkeypatch.delenv(name)
    for name, value in {**CHEAP_ENV, "KEYLIMIT_KEYS_URL": f"sqlite:///{tmp_path / 'keys.db'}"}.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def cli(env: dict[str, str], *args: str) -> Any:
    """``python -m keylimit ARGS`` in a subprocess; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "keylimit", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s lifespan startup, then its shutdown (what a server does around its requests)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    running = asyncio.ensure_future(app(scope, to_app.get, from_app.put))

    async def step(message: str) -> None:
        await to_app.put({"type": f"lifespan.{message}"})
        answer = asyncio.ensure_future(from_app.get())
        await asyncio.wait([answer, running], return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            running.result()  # the app's exception, if it raised one
            raise AssertionError(f"the app returned without answering lifespan.{message}")
        assert answer.result()["type"] == f"lifespan.{message}.complete", answer.result()

    await step("startup")
    try:
        yield
    finally:
        await step("shutdown")
        await running
