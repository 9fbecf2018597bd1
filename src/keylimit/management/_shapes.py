"""The management API's JSON: the answers' shapes and the requests' fields, shared by the
HTTP API (``management``) and the CLI so that both speak the same JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .._errors import BadRequest
from .._models import Account, KeyRecord, KeyType, Limits, Scope, iso8601
from ..backends import Decision
from ._manager import KeyManager

LIMIT_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


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


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise BadRequest(f"unknown field {name!r}; fields: {', '.join(sorted(allowed))}", param=name)


def str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} is required and must be a string", param=name)
    return value
