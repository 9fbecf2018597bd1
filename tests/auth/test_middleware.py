"""KeyAuthMiddleware as an app sees it: request.user, scopes, what passes unauthenticated,
websockets, lifespan, and that no exception escapes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request

from keylimit import ConfigurationError, KeyManager, Scope
from keylimit._types import PRINCIPAL_SCOPE_KEY, Message
from keylimit.auth._hashing import CHEAPEST, Hasher
from keylimit.auth._middleware import KeyAuthMiddleware
from keylimit.stores.memory import MemoryKeyStore

from .conftest import Harness, SpyStore, inner_app


async def test_request_user_works_inside_starlette(harness: Harness) -> None:
    record, token = await harness.manager.create_key("acct_1", "k", scopes=[Scope.INFERENCE, Scope.READ])
    response = await harness.call("POST", token)
    assert response.status_code == 200
    assert response.json() == {
        "identity": record.id,
        "display_name": record.hint,
        "is_authenticated": True,
        "auth_scopes": ["inference", "read"],
        "account": "acct_1",
    }


async def test_request_user_works_inside_fastapi() -> None:
    store = MemoryKeyStore()
    _, token = await KeyManager(store, hasher=Hasher(CHEAPEST)).create_key("acct_9", "k")
    api = FastAPI()

    def principal(request: Request) -> Any:
        return request.scope[PRINCIPAL_SCOPE_KEY]

    @api.get("/v1/whoami")
    async def whoami(request: Request, p: Any = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        return {"user": request.user.identity, "account": p.account_id, "plan": p.plan}

    app = KeyAuthMiddleware(api, keys=store, hasher=Hasher(CHEAPEST))
    harness = Harness()
    harness.app = app
    response = await harness.call("GET", token, "/v1/whoami")
    assert response.status_code == 200
    assert response.json()["account"] == "acct_9"
    assert response.json()["plan"] == "free"
    assert response.json()["user"].startswith("key_")


@pytest.mark.parametrize(
    ("scopes", "method", "status"),
    [
        # full and inference: everything this layer sees
        ([Scope.FULL], "POST", 200),
        ([Scope.FULL], "DELETE", 200),
        ([Scope.INFERENCE], "POST", 200),
        ([Scope.INFERENCE], "GET", 200),
        # read: GET and HEAD only
        ([Scope.READ], "GET", 200),
        ([Scope.READ], "HEAD", 200),
        ([Scope.READ], "POST", 403),
        ([Scope.READ], "DELETE", 403),
    ],
)
async def test_scopes(harness: Harness, scopes: list[Scope], method: str, status: int) -> None:
    _, token = await harness.manager.create_key("acct_1", "k", scopes=scopes)
    response = await harness.call(method, token, "/v1/models")
    assert response.status_code == status
    if status == 403:
        assert response.json() == {
            "error": {
                "message": "This API key's scopes (read) do not allow DELETE requests.".replace("DELETE", method),
                "type": "permission_error",
                "param": None,
                "code": "insufficient_scope",
            }
        }


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        # open paths
        ("GET", "/health", {}),
        # the management API authorizes its own requests
        ("GET", "/v1/accounts/acct_1/apiKeys", {}),
        ("POST", "/v1/accounts/acct_1/apiKeys", {"authorization": "Bearer admin-session-token"}),
        # CORS preflight
        ("OPTIONS", "/v1/chat/completions", {"access-control-request-method": "POST", "origin": "https://a.example"}),
    ],
)
async def test_passes_unauthenticated(harness: Harness, method: str, path: str, headers: dict[str, str]) -> None:
    async with harness.client() as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == 200
    if method == "OPTIONS":
        assert response.headers["access-control-allow-origin"] == "https://a.example"
    assert harness.store.lookups == 0


async def test_options_without_preflight_header_needs_a_key(harness: Harness) -> None:
    response = await harness.call("OPTIONS", None)
    assert response.status_code == 401


async def test_similar_paths_are_not_open(harness: Harness) -> None:
    for path in ("/healthz", "/health/x", "/v1/accountsX", "/v1/account"):
        assert (await harness.call("GET", None, path)).status_code == 401, path


async def test_unexpected_store_error_is_a_503_not_an_exception(harness: Harness) -> None:
    token = await harness.key()

    async def broken(kid: str) -> None:
        raise RuntimeError("disk on fire")

    harness.store.inner.get_key = broken
    response = await harness.get(token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "fire" not in response.text


# --- raw ASGI: websockets and lifespan


async def _run(app: Any, scope: dict[str, Any], incoming: list[Message]) -> list[Message]:
    sent: list[Message] = []
    queue = list(incoming)

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _ws_scope(token: str | None) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return {"type": "websocket", "path": "/v1/realtime", "headers": headers, "client": ("10.0.0.1", 1)}


async def test_websockets_are_authenticated(harness: Harness) -> None:
    token = await harness.key()
    reached: list[Any] = []

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["user"].account_id)
        await send({"type": "websocket.accept"})

    app = KeyAuthMiddleware(ws_app, authenticator=harness.auth)
    assert await _run(app, _ws_scope(None), [{"type": "websocket.connect"}]) == [
        {"type": "websocket.close", "code": 1008, "reason": "missing_api_key"}
    ]
    assert await _run(app, _ws_scope("forii_sk_nope"), [{"type": "websocket.connect"}]) == [
        {"type": "websocket.close", "code": 1008, "reason": "invalid_api_key"}
    ]
    assert reached == []
    assert await _run(app, _ws_scope(token), [{"type": "websocket.connect"}]) == [{"type": "websocket.accept"}]
    assert reached == ["acct_1"]


async def test_read_only_keys_cannot_open_websockets(harness: Harness) -> None:
    _, token = await harness.manager.create_key("acct_1", "k", scopes=[Scope.READ])
    app = KeyAuthMiddleware(inner_app(), authenticator=harness.auth)
    sent = await _run(app, _ws_scope(token), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "insufficient_scope"}]


async def test_lifespan_starts_the_store_and_shutdown_flushes_last_used() -> None:
    store = SpyStore(MemoryKeyStore())
    _, token = await KeyManager(store, hasher=Hasher(CHEAPEST)).create_key("acct_1", "k")  # type: ignore[arg-type]

    async def app_(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app = KeyAuthMiddleware(app_, keys=store, hasher=Hasher(CHEAPEST))
    events: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    lifespan = asyncio.create_task(app({"type": "lifespan"}, events.get, send))
    await events.put({"type": "lifespan.startup"})
    while not sent:
        await asyncio.sleep(0)
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert store.calls["start"] == 1

    http = {
        "type": "http",
        "method": "GET",
        "path": "/v1/models",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "client": ("10.0.0.1", 1),
    }
    assert (await _run(app, http, [{"type": "http.request", "body": b""}]))[0]["status"] == 204
    assert store.calls["start"] == 1  # not again
    assert store.calls["touch_keys"] == 0  # written behind

    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert store.calls["touch_keys"] == 1  # shutdown wrote the pending last use
    assert store.calls["aclose"] == 0  # a store passed in is the caller's to close


async def test_the_first_request_starts_the_store_when_there_is_no_lifespan(harness: Harness) -> None:
    token = await harness.key()
    assert harness.store.calls["start"] == 0
    assert (await harness.get(token)).status_code == 200
    assert (await harness.get(token)).status_code == 200
    assert harness.store.calls["start"] == 1


async def test_a_store_url_and_authenticator_options_build_the_authenticator() -> None:
    app = KeyAuthMiddleware(inner_app(), keys="memory://", hasher=Hasher(CHEAPEST), failures_per_minute=1)
    _, token = await KeyManager(app.authenticator.store, hasher=Hasher(CHEAPEST)).create_key("acct_1", "k")
    harness = Harness()
    harness.app = app
    assert (await harness.get(token)).status_code == 200
    for _ in range(3):  # failures_per_minute is accepted and refuses nothing
        assert (await harness.get("forii_sk_nope")).status_code == 401
    sent = await _run(app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_needs_an_authenticator_or_keys() -> None:
    with pytest.raises(ConfigurationError, match="authenticator= or keys="):
        KeyAuthMiddleware(inner_app())
    with pytest.raises(ConfigurationError):
        KeyAuthMiddleware(inner_app(), authenticator=Harness().auth, keys="memory://")
