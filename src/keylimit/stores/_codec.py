"""Records as flat fields, for the stores that keep text and numbers (SQLite rows, Redis hashes).

One place decides how a ``KeyRecord`` or an ``Account`` is written and read back: enums by
value, scopes comma-joined, times as floats, absent values as None (a NULL column, a
missing hash field; a key stored before check values has no ``check``). Reading accepts
``bytes`` too, as Redis answers with them. A stored record that cannot be read back is
reported as ``KeyStoreUnavailable``, never as a crash.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import KeyStoreUnavailable
from .._models import Account, KeyRecord, KeyStatus, KeyType, Limits, Scope
from ..auth._hashing import CHECK_BYTES

Field = str | float | int | None
CHECK_LEN = 2 * CHECK_BYTES
_HEX = frozenset("0123456789abcdef")

KEY_FIELDS = (
    "kid",
    "account_id",
    "name",
    "key_type",
    "scopes",
    "hash",
    "hint",
    "created_at",
    "status",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "check",
)
LIMIT_FIELDS = ("requests", "prompt_tokens", "completion_tokens")
ACCOUNT_FIELDS = ("id", "plan", *LIMIT_FIELDS)


def key_to_fields(record: KeyRecord) -> dict[str, Field]:
    return {
        "kid": record.kid,
        "account_id": record.account_id,
        "name": record.name,
        "key_type": record.key_type.value,
        "scopes": ",".join(s.value for s in record.scopes),
        "hash": record.hash,
        "hint": record.hint,
        "created_at": float(record.created_at),
        "status": record.status.value,
        "expires_at": _float_or_none(record.expires_at),
        "revoked_at": _float_or_none(record.revoked_at),
        "last_used_at": _float_or_none(record.last_used_at),
        "check": record.check,
    }


def key_from_fields(fields: Mapping[str, object]) -> KeyRecord:
    kid = _text(fields.get("kid"))
    try:
        scopes = _text(fields["scopes"])
        return KeyRecord(
            kid=kid,
            account_id=_text(fields["account_id"]),
            name=_text(fields["name"]),
            key_type=KeyType(_text(fields["key_type"])),
            scopes=tuple(Scope(s) for s in scopes.split(",")) if scopes else (),
            hash=_text(fields["hash"]),
            hint=_text(fields["hint"]),
            created_at=_number(fields["created_at"]),
            status=KeyStatus(_text(fields["status"])),
            expires_at=_optional_number(fields.get("expires_at")),
            revoked_at=_optional_number(fields.get("revoked_at")),
            last_used_at=_optional_number(fields.get("last_used_at")),
            check=_check_or_none(fields.get("check")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyStoreUnavailable(f"the key store holds a malformed record for key_{kid}") from exc


def account_to_fields(account: Account) -> dict[str, Field]:
    limits = account.limits
    return {
        "id": account.id,
        "plan": account.plan,
        "requests": None if limits is None else limits.requests,
        "prompt_tokens": None if limits is None else limits.prompt_tokens,
        "completion_tokens": None if limits is None else limits.completion_tokens,
    }


def account_from_fields(fields: Mapping[str, object]) -> Account:
    account_id = _text(fields.get("id"))
    try:
        raw = [fields.get(name) for name in LIMIT_FIELDS]
        limits = None if all(v is None for v in raw) else Limits(*(int(_text(v)) for v in raw))
        return Account(account_id, _text(fields["plan"]), limits)
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyStoreUnavailable(f"the key store holds a malformed record for account {account_id!r}") from exc


def decode_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, object]:
    """A Redis ``HGETALL`` answer with text field names."""
    return {_text(k): v for k, v in raw.items()}


def encode_hash(fields: Mapping[str, Field]) -> dict[str, str]:
    """Fields for a Redis hash: absent values left out, floats written so they read back exactly."""
    return {k: repr(v) if isinstance(v, float) else str(v) for k, v in fields.items() if v is not None}


def _check_or_none(value: object) -> str | None:
    # Not a check value keylimit wrote (absent, or damaged): treated as none, so the key
    # verifies with argon2 and is given its check again, rather than being locked out.
    if value is None:
        return None
    text = _text(value)
    return text if len(text) == CHECK_LEN and _HEX.issuperset(text) else None


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected text, found {type(value).__name__}")


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float(_text(value))


def _optional_number(value: object) -> float | None:
    if value is None or value in (b"", ""):
        return None
    return _number(value)
