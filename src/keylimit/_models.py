"""Value objects shared by every layer: keys, accounts, limits and the principal."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class KeyType(enum.StrEnum):
    SDK = "sdk"
    API = "api"


class Scope(enum.StrEnum):
    FULL = "full"
    INFERENCE = "inference"
    READ = "read"


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


def iso8601(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with a ``Z`` (``2025-01-15T10:30:00Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-window allowances on the three dimensions."""

    requests: int
    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        for name in ("requests", "prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.requests, self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True, slots=True)
class Account:
    """An account: its plan, and its own limits where the plan is custom."""

    id: str
    plan: str = "free"
    limits: Limits | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the key store holds for one key. Never the plaintext; the hash and the check
    value stay out of repr (and out of ``public``).

    ``check`` is the key's check value (``auth._hashing.key_check``), None for a key created
    before check values existed, until its first successful verification adds it.
    """

    kid: str
    account_id: str
    name: str
    key_type: KeyType
    scopes: tuple[Scope, ...]
    hash: str = field(repr=False)
    hint: str
    created_at: float
    status: KeyStatus = KeyStatus.ACTIVE
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    check: str | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"key_{self.kid}"

    def is_usable(self, now: float) -> bool:
        return self.status is KeyStatus.ACTIVE and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """The JSON shape of the management API (without the key itself)."""
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "type": self.key_type.value,
            "scopes": [s.value for s in self.scopes],
            "display": self.hint,
            "created": iso8601(self.created_at),
            "status": self.status.value,
            "expires_at": iso8601(self.expires_at),
            "revoked_at": iso8601(self.revoked_at),
            "last_used_at": iso8601(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: written to ``scope["keylimit.principal"]`` and ``scope["user"]``."""

    key_id: str
    account_id: str
    key_type: KeyType
    scopes: frozenset[Scope]
    plan: str
    limits: Limits | None = None
    display_hint: str = ""

    # starlette.authentication.BaseUser's interface, so ``request.user`` works.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.display_hint

    @property
    def identity(self) -> str:
        return self.key_id
