"""The key-management API (design.md §4), as a Starlette app mountable anywhere.

    POST   {path}/{account_id}/apiKeys            create a key → 201, the key shown once
    GET    {path}/{account_id}/apiKeys            list keys (never a key, only its display hint)
    DELETE {path}/{account_id}/apiKeys/{key_id}   revoke (idempotent) → {"id", "status": "revoked"}
    GET    {path}/{account_id}                    the account's plan and effective limits
    GET    {path}/{account_id}/usage              use of each limit in the current window (with ``limits``)
    PUT    {path}/{account_id}                    set the plan (and own limits); admin session only
    GET    {path}/openapi.json                    the OpenAPI description of all of the above

``path`` defaults to ``/v1/accounts``, so the app served as is answers on the reference's
URLs; pass ``path=""`` to ``Mount("/v1/accounts", ...)`` it instead. A request is allowed by
``Authorization: Bearer <session token>`` that the ``SessionVerifier`` accepts for that
account (by default: the admin token), or by a ``full``-scope key of that same account.
A key of another account gets 404, as if the account had no such keys.

Given the rate limit backend (``limits=``), the app also reports usage, read with the
backend's ``peek`` (nothing is charged); given ``dashboard_path``, it serves the keys
dashboard page (``keylimit.dashboard``) there, which calls the endpoints above.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._clock import Clock, system_clock
from .._errors import (
    BadRequest,
    HTTPError,
    InsufficientScope,
    NotFound,
    RequestTooLarge,
    StorageUnavailable,
    error_body,
    http_error_for,
)
from .._models import KeyType, Principal, Scope
from ..backends import LimitBackend
from ..config._config import Config
from ..http._json import loads as parse_json
from ..ratelimit._middleware import account_identity
from ._manager import KeyManager
from ._openapi import openapi_schema
from ._shapes import (
    account_json,
    created_json,
    list_json,
    only_fields,
    parse_expires_at,
    parse_key_type,
    parse_limits,
    parse_scopes,
    revoked_json,
    str_field,
    usage_json,
)

Authenticate = Callable[[bytes | None, str | None], Awaitable[Principal]]
"""``(Authorization header, client address) → Principal``; raises MissingKey, InvalidKey, …"""

MAX_BODY = 64 * 1024


@runtime_checkable
class SessionVerifier(Protocol):
    """Decides whether a session token (not an API key) may manage ``account_id``."""

    async def verify(self, token: str, account_id: str) -> bool: ...


class AdminTokenVerifier:
    """The default: the one admin token (``KEYLIMIT_ADMIN_TOKEN``) may manage every account."""

    __slots__ = ("_token",)

    def __init__(self, admin_token: str | None) -> None:
        self._token = admin_token.encode() if admin_token else None

    async def verify(self, token: str, account_id: str) -> bool:
        return self._token is not None and hmac.compare_digest(token.encode(), self._token)

    def __repr__(self) -> str:
        return f"AdminTokenVerifier(admin_token={'***' if self._token else None})"


# --- the app.


def management_app(
    *,
    manager: KeyManager,
    authenticate: Authenticate,
    session_verifier: SessionVerifier | None = None,
    admin_token: str | None = None,
    path: str = "/v1/accounts",
    limits: LimitBackend | None = None,
    clock: Clock | None = None,
    dashboard_path: str | None = None,
) -> Starlette:
    """The management endpoints at ``path``; see the module docstring.

    ``limits`` (the backend the rate limit middleware charges) adds ``GET …/{account_id}/usage``;
    ``clock`` is its time source (default: the system clock). ``dashboard_path`` serves the
    keys dashboard there.
    """
    verifier = session_verifier if session_verifier is not None else AdminTokenVerifier(admin_token)
    path = path.rstrip("/")

    async def authorize(request: Request, account_id: str, *, admin_only: bool = False) -> None:
        header = request.headers.get("authorization")
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        # A session token is decided by the verifier alone (the default compares the admin
        # token in constant time): nobody's failed attempts can make it refuse a good one.
        is_session = scheme.lower() == "bearer" and token and manager.key_format.parse(token) is None
        if is_session and await verifier.verify(token, account_id):
            return
        # Whatever is not an accepted session token takes the key path, which answers 401.
        client = request.client.host if request.client else None
        principal = await authenticate(header.encode("latin-1") if header is not None else None, client)
        if principal.account_id != account_id:
            raise NotFound("No such account, or you may not manage it.")
        if admin_only:
            raise InsufficientScope("Changing an account's plan needs an admin session, not an API key.")
        if Scope.FULL not in principal.scopes:
            raise InsufficientScope("Managing keys needs a key with the 'full' scope.")

    async def create_key(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await authorize(request, account_id)
        body = await _json_body(request)
        only_fields(body, {"name", "type", "scopes", "expires_at"})
        record, token = await manager.create_key(
            account_id,
            str_field(body, "name"),
            key_type=parse_key_type(body.get("type", KeyType.SDK.value)),
            scopes=parse_scopes(body.get("scopes", [Scope.FULL.value])),
            expires_at=parse_expires_at(body.get("expires_at")),
        )
        return _json(created_json(record, token), 201)

    async def list_keys(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await authorize(request, account_id)
        return _json(list_json(await manager.list_keys(account_id)))

    async def revoke_key(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await authorize(request, account_id)
        record = await manager.revoke_key(account_id, request.path_params["key_id"])
        if record is None:
            raise NotFound("No API key with that id in this account.")
        return _json(revoked_json(record))

    async def get_account(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await authorize(request, account_id)
        return _json(account_json(manager, await manager.get_account(account_id)))

    async def set_plan(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await authorize(request, account_id, admin_only=True)
        body = await _json_body(request)
        only_fields(body, {"plan", "limits"})
        account = await manager.set_plan(account_id, str_field(body, "plan"), parse_limits(body.get("limits")))
        return _json(account_json(manager, account))

    schema = openapi_schema(path, usage=limits is not None)

    async def openapi(request: Request) -> Response:
        return _json(schema)

    routes = [
        Route(f"{path}/openapi.json", openapi, methods=["GET"]),
        Route(f"{path}/{{account_id}}/apiKeys", _answers(create_key), methods=["POST"]),
        Route(f"{path}/{{account_id}}/apiKeys", _answers(list_keys), methods=["GET"]),
        Route(f"{path}/{{account_id}}/apiKeys/{{key_id}}", _answers(revoke_key), methods=["DELETE"]),
        Route(f"{path}/{{account_id}}", _answers(get_account), methods=["GET"]),
        Route(f"{path}/{{account_id}}", _answers(set_plan), methods=["PUT"]),
    ]
    if limits is not None:
        backend, now = limits, clock or system_clock

        async def get_usage(request: Request) -> Response:
            account_id = request.path_params["account_id"]
            await authorize(request, account_id)
            account = await manager.get_account(account_id)
            # The rate limit middleware counts an account under this identity.
            decision = await backend.peek(account_identity(account.id), manager.limits_of(account).as_tuple(), now())
            return _json(usage_json(account, decision))

        routes.append(Route(f"{path}/{{account_id}}/usage", _answers(get_usage), methods=["GET"]))
    if dashboard_path is not None:
        from ..dashboard import dashboard_routes

        routes += dashboard_routes(dashboard_path, api_path=path)
    return Starlette(routes=routes, exception_handlers={HTTPException: _starlette_error})


def management_app_from_config(config: Config, *, session_verifier: SessionVerifier | None = None) -> Starlette:
    """The management app over the store, plans and key settings ``config`` describes.

    It owns its store: started with the app's lifespan and closed when the app shuts down.
    """
    from ..config import _build

    manager = _build.key_manager(config)
    authenticator = _build.authenticator(config, manager.store)
    app = management_app(
        manager=manager,
        authenticate=authenticator.authenticate,
        session_verifier=session_verifier,
        admin_token=config.admin_token,
        path=config.management_path,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await authenticator.start()
        try:
            yield
        finally:
            await authenticator.aclose()
            await manager.store.aclose()

    app.router.lifespan_context = lifespan
    return app


def _answers(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turns every documented exception into its OpenAI-shaped answer."""

    async def answered(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HTTPError as exc:
            return _error(exc)
        except StorageUnavailable as exc:
            return _error(http_error_for(exc))

    return answered


def _json(content: Any, status: int = 200) -> Response:
    return JSONResponse(content, status_code=status)


def _error(exc: HTTPError) -> Response:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in exc.headers()}
    return Response(exc.body(), exc.status, headers=headers, media_type="application/json")


async def _starlette_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods, in the same error shape as everything else.
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    headers = dict(exc.headers or {})
    body = error_body(str(exc.detail), "invalid_request_error", code)
    return Response(body, exc.status_code, headers=headers, media_type="application/json")


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to ``MAX_BODY`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise RequestTooLarge(f"The request body is larger than {MAX_BODY} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestTooLarge(f"The request body is larger than {MAX_BODY} bytes.")
        chunks.append(chunk)
    try:
        body = parse_json(b"".join(chunks))
    except ValueError:
        raise BadRequest("The request body is not valid JSON; send a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body
