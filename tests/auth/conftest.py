"""Spies for the auth tests: a store that counts (and can fail) its calls, a hasher that counts
argon2 verifies and how many ran at once, and a small app behind KeyAuthMiddleware."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from keylimit import KeyManager, KeyStoreUnavailable, ManualClock
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST, Argon2Params, Hasher
from keylimit.auth._middleware import KeyAuthMiddleware
from keylimit.stores.memory import MemoryKeyStore

NOT_COUNTED = frozenset({"start", "aclose", "subscribe"})


class SpyStore:
    """Wraps a real store; counts every data call; raises KeyStoreUnavailable while ``down``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.touched: list[dict[str, float]] = []
        self.down = False

    @property
    def lookups(self) -> int:
        return sum(n for name, n in self.calls.items() if name not in NOT_COUNTED)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "touch_keys":
                self.touched.append(dict(args[0]))
            if self.down and name not in NOT_COUNTED:
                raise KeyStoreUnavailable("the test key store is down")
            return await attr(*args, **kwargs)

        return call


class CountingHasher(Hasher):
    """A real argon2 hasher that counts verify calls and the most that ever ran at once."""

    def __init__(self, params: Argon2Params = CHEAPEST) -> None:
        super().__init__(params)
        self.verifies = 0
        self.active = 0
        self.peak = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def verify(self, hashed: str, token: str) -> bool:
        with self._lock:
            self.threads.add(threading.get_ident())
            self.verifies += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            return super().verify(hashed, token)
        finally:
            with self._lock:
                self.active -= 1


async def echo_principal(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "identity": user.identity,
            "display_name": user.display_name,
            "is_authenticated": user.is_authenticated,
            "auth_scopes": request.auth.scopes,
            "account": request.scope["keylimit.principal"].account_id,
        }
    )


async def management(request: Request) -> PlainTextResponse:
    return PlainTextResponse("management app reached", headers={"x-has-principal": str("user" in request.scope)})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    return Starlette(
        middleware=[Middleware(CORSMiddleware, allow_origins=["https://a.example"], allow_methods=["*"])],
        routes=[
            Route("/v1/chat/completions", echo_principal, methods=["GET", "POST"]),
            Route("/v1/models", echo_principal, methods=["GET", "HEAD", "POST", "DELETE"]),
            Route("/health", health),
            Route("/v1/accounts/{rest:path}", management, methods=["GET", "POST", "DELETE"]),
        ],
    )


class Harness:
    """A store, a hasher, a clock, a KeyManager and an app behind KeyAuthMiddleware."""

    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock()
        self.hasher: CountingHasher = options.pop("hasher", None) or CountingHasher()
        self.store = SpyStore(options.pop("store", None) or MemoryKeyStore())
        self.manager = KeyManager(self.store, hasher=self.hasher, clock=self.clock)  # type: ignore[arg-type]
        self.auth = Authenticator(self.store, hasher=self.hasher, clock=self.clock, **options)  # type: ignore[arg-type]
        # inner_app serves a stand-in for the management API (which authorizes its own requests).
        self.app = KeyAuthMiddleware(inner_app(), authenticator=self.auth, management_path="/v1/accounts")

    async def key(self, account: str = "acct_1", **kwargs: Any) -> str:
        _, token = await self.manager.create_key(account, "test key", **kwargs)
        return token

    def client(self, address: str = "10.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def get(self, token: str | bytes | None, path: str = "/v1/chat/completions", **kw: Any) -> httpx.Response:
        return await self.call("GET", token, path, **kw)

    async def call(
        self, method: str, token: str | bytes | None, path: str = "/v1/chat/completions", address: str = "10.0.0.1"
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["authorization"] = token if isinstance(token, bytes) else f"Bearer {token}".encode()
        async with self.client(address) as client:
            return await client.request(method, path, headers=headers)


@pytest.fixture
def harness() -> Harness:
    return Harness()


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness() -> MakeHarness:
    return Harness
