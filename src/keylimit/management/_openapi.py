"""The management API's OpenAPI description, hand-written: the app has few operations."""

from __future__ import annotations

from typing import Any

from ._shapes import LIMIT_FIELDS


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
    keys_errors = "400 401 403 404 503"
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
