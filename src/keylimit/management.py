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
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._clock import Clock, system_clock
from ._config import Config
from ._errors import (
    BadRequest,
    HTTPError,
    InsufficientScope,
    MissingKey,
    NotFound,
    RequestTooLarge,
    StorageUnavailable,
    error_body,
    http_error_for,
)
from ._manager import KeyManager
from ._models import Account, KeyRecord, KeyType, Limits, Principal, Scope, iso8601
from ._ratelimit import account_identity
from .backends import Decision, LimitBackend

Authenticate = Callable[[bytes | None, str | None], Awaitable[Principal]]
"""``(Authorization header, client address) → Principal``; raises MissingKey, InvalidKey, …"""

MAX_BODY = 64 * 1024
LIMIT_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


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


# --- JSON shapes shared with the CLI.


def created_json(record: KeyRecord, token: str) -> dict[str, Any]:
    """The create answer: the reference's fields first, then the other public fields."""
    public = record.public()
    return {"id": public["id"], "name": public["name"], "key": token, **public}


def list_json(records: list[KeyRecord]) -> dict[str, Any]:
    return {"object": "list", "data": [r.public() for r in records]}


def revoked_json(record: KeyRecord) -> dict[str, Any]:
    return {"id": record.id, "status": record.status.value}


def account_json(manager: KeyManager, account: Account) -> dict[str, Any]:
    limits = manager.limits_of(account)
    return {
        "id": account.id,
        "object": "account",
        "plan": account.plan,
        "limits": dict(zip(LIMIT_FIELDS, limits.as_tuple(), strict=True)),
        "custom_limits": account.limits is not None,
    }


def usage_json(account: Account, decision: Decision) -> dict[str, Any]:
    """Where the account stands in the current window: weighted use, what is left, when it resets."""
    return {
        "id": account.id,
        "object": "usage",
        "plan": account.plan,
        "window_seconds": decision.window,
        "reset_at": iso8601(decision.reset_at),
        "limits": dict(zip(LIMIT_FIELDS, decision.limits, strict=True)),
        "used": {name: math.ceil(used) for name, used in zip(LIMIT_FIELDS, decision.used, strict=True)},
        "remaining": dict(zip(LIMIT_FIELDS, decision.remaining, strict=True)),
        "known": not decision.unknown,
    }


# --- request fields, shared with the CLI: each raises BadRequest naming its param.


def parse_expires_at(value: object) -> float | None:
    """``None``, Unix seconds (number or digits) or ISO 8601 (``2030-01-01T00:00:00Z``; UTC if no offset)."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                seconds = None
            else:
                seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if seconds is None or not math.isfinite(seconds) or not 0 < seconds < 253402300800:
        raise BadRequest(
            "expires_at must be Unix seconds or an ISO 8601 time like 2030-01-01T00:00:00Z", param="expires_at"
        )
    return seconds


def parse_key_type(value: object) -> KeyType:
    if not isinstance(value, str) or value not in {t.value for t in KeyType}:
        raise BadRequest("type must be 'sdk' or 'api'", param="type")
    return KeyType(value)


def parse_scopes(value: object) -> tuple[Scope, ...]:
    names = {s.value for s in Scope}
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in names for v in value):
        raise BadRequest("scopes must be a non-empty list of: full, inference, read", param="scopes")
    return tuple(Scope(v) for v in value)


def parse_limits(value: object) -> Limits | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != set(LIMIT_FIELDS):
        raise BadRequest(f"limits must be an object with {', '.join(LIMIT_FIELDS)}", param="limits")
    try:
        return Limits(*(value[name] for name in LIMIT_FIELDS))
    except ValueError:
        raise BadRequest("limits must be whole numbers, zero or more", param="limits") from None


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise BadRequest(f"unknown field {name!r}; fields: {', '.join(sorted(allowed))}", param=name)


def _str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} is required and must be a string", param=name)
    return value


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
        client = request.client.host if request.client else None
        if scheme.lower() == "bearer" and token and manager.key_format.parse(token) is None:
            # A session token. An address throttled for failures may not try one either:
            # asked about no key, ``authenticate`` refuses a throttled address and else
            # answers MissingKey without counting a failure.
            with contextlib.suppress(MissingKey):
                await authenticate(None, client)
            if await verifier.verify(token, account_id):
                return
        # Whatever is not an accepted session token takes the key path, which answers 401
        # for it and counts the failure against this address.
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
        _only(body, {"name", "type", "scopes", "expires_at"})
        record, token = await manager.create_key(
            account_id,
            _str_field(body, "name"),
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
        _only(body, {"plan", "limits"})
        account = await manager.set_plan(account_id, _str_field(body, "plan"), parse_limits(body.get("limits")))
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
        from .dashboard import dashboard_routes

        routes += dashboard_routes(dashboard_path, api_path=path)
    return Starlette(routes=routes, exception_handlers={HTTPException: _starlette_error})


def management_app_from_config(config: Config, *, session_verifier: SessionVerifier | None = None) -> Starlette:
    """The management app over the store, plans and key settings ``config`` describes.

    It owns its store: started with the app's lifespan and closed when the app shuts down.
    """
    from . import _runtime

    manager = _runtime.key_manager(config)
    authenticator = _runtime.authenticator(config, manager.store)
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
        body = json.loads(b"".join(chunks))
    except ValueError:
        raise BadRequest("The request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


# --- the OpenAPI description (hand-written: the app has five operations).


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    "400": _answer("Bad JSON, an unknown field, a wrong type or value (code invalid_request)", "Error"),
    "401": _answer("No key or session token (missing_api_key), or a wrong one (invalid_api_key)", "Error"),
    "403": _answer("The key lacks the 'full' scope, or the operation needs an admin session", "Error"),
    "404": _answer("No such key, or the key belongs to another account (not_found)", "Error"),
    "413": _answer("The request body is over 64 KiB (request_too_large)", "Error"),
    "429": _answer("Too many failed authentications from this address (too_many_auth_failures)", "Error"),
    "503": _answer("The key store is unavailable (service_unavailable); see Retry-After", "Error"),
}
_STRING_OR_NULL = {"type": "string", "nullable": True}
_TIME = {"type": "string", "format": "date-time", "example": "2025-01-15T10:30:00Z"}
_LIMITS = {
    "type": "object",
    "required": list(LIMIT_FIELDS),
    "properties": {name: {"type": "integer", "minimum": 0} for name in LIMIT_FIELDS},
}
_API_KEY_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "example": "key_abc123"},
    "object": {"type": "string", "enum": ["api_key"]},
    "name": {"type": "string"},
    "type": {"type": "string", "enum": ["sdk", "api"]},
    "scopes": {"type": "array", "items": {"type": "string", "enum": ["full", "inference", "read"]}},
    "display": {"type": "string", "description": "Public hint: prefix, key id and the last 4 characters"},
    "created": _TIME,
    "status": {"type": "string", "enum": ["active", "revoked"]},
    "expires_at": {**_TIME, "nullable": True},
    "revoked_at": {**_TIME, "nullable": True},
    "last_used_at": {**_TIME, "nullable": True},
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _STRING_OR_NULL,
                    "code": _STRING_OR_NULL,
                },
            }
        },
    },
    "CreateKey": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 128, "example": "prod-api"},
            "type": {"type": "string", "enum": ["sdk", "api"], "default": "sdk"},
            "scopes": {"type": "array", "items": {"type": "string", "enum": ["full", "inference", "read"]}},
            "expires_at": {
                "description": "Unix seconds or ISO 8601 (UTC when no offset); null: never",
                "oneOf": [{"type": "number"}, {"type": "string"}],
                "nullable": True,
            },
        },
    },
    "ApiKey": {"type": "object", "properties": _API_KEY_FIELDS},
    "CreatedKey": {
        "type": "object",
        "properties": {**_API_KEY_FIELDS, "key": {"type": "string", "description": "Shown only in this answer"}},
    },
    "KeyList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("ApiKey")},
        },
    },
    "Revoked": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["revoked"]}},
    },
    "Account": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["account"]},
            "plan": {"type": "string"},
            "limits": _LIMITS,
            "custom_limits": {"type": "boolean"},
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["usage"]},
            "plan": {"type": "string"},
            "window_seconds": {"type": "number"},
            "reset_at": {**_TIME, "description": "When the current (clock-aligned) window ends"},
            "limits": _LIMITS,
            "used": {**_LIMITS, "description": "Sliding-window use: this window plus the overlapping part of the last"},
            "remaining": _LIMITS,
            "known": {"type": "boolean", "description": "False while limit storage is down and nothing is counted"},
        },
    },
    "SetPlan": {
        "type": "object",
        "required": ["plan"],
        "additionalProperties": False,
        "properties": {"plan": {"type": "string"}, "limits": {**_LIMITS, "nullable": True}},
    },
}


def _operation(summary: str, ok: tuple[str, str, str], errors: str, body: str | None = None) -> dict[str, Any]:
    status, description, schema = ok
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {status: _answer(description, schema), **{code: _ERRORS[code] for code in errors.split()}},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def openapi_schema(path: str, *, usage: bool = False) -> dict[str, Any]:
    account = {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
    key = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
    keys_errors = "400 401 403 404 429 503"
    paths: dict[str, Any] = {
        f"{path}/{{account_id}}/apiKeys": {
            "parameters": [account],
            "post": _operation(
                "Create a key (the key is in this answer only)",
                ("201", "The new key", "CreatedKey"),
                f"{keys_errors} 413",
                "CreateKey",
            ),
            "get": _operation("List the account's keys", ("200", "The keys, without secrets", "KeyList"), keys_errors),
        },
        f"{path}/{{account_id}}/apiKeys/{{key_id}}": {
            "parameters": [account, key],
            "delete": _operation("Revoke a key (idempotent)", ("200", "Revoked", "Revoked"), keys_errors),
        },
        f"{path}/{{account_id}}": {
            "parameters": [account],
            "get": _operation("The account's plan and limits", ("200", "The account", "Account"), keys_errors),
            "put": _operation(
                "Set the account's plan (admin session only)",
                ("200", "The account", "Account"),
                f"{keys_errors} 413",
                "SetPlan",
            ),
        },
    }
    if usage:
        paths[f"{path}/{{account_id}}/usage"] = {
            "parameters": [account],
            "get": _operation(
                "Use of each limit in the current window (read only; charges nothing)",
                ("200", "The account's usage", "Usage"),
                keys_errors,
            ),
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "keylimit key management", "version": "1"},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A session token (default: the admin token) or a full-scope key of the account",
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
