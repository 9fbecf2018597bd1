"""The key store seam: what every store (memory, SQLite, Redis, Redis Cluster) provides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .._models import Account, KeyRecord


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """A change that caches elsewhere must hear of: a key revoked, an account's plan changed."""

    kind: Literal["key", "account"]
    id: str  # the kid for "key", the account id for "account"


Listener = Callable[[StoreEvent], None]


@runtime_checkable
class KeyStore(Protocol):
    """Keys and accounts. Every method raises ``KeyStoreUnavailable`` when storage fails.

    Changes made through a store are announced to its listeners in this process at once;
    stores shared between processes (Redis) announce them to the others too.
    """

    async def add_key(self, record: KeyRecord) -> None:
        """Store a new key; creates its account (default plan) if there is none."""

    async def get_key(self, kid: str) -> KeyRecord | None: ...

    async def list_keys(self, account_id: str) -> list[KeyRecord]:
        """The account's keys, oldest first, revoked ones included."""

    async def revoke_key(self, account_id: str, kid: str, at: float) -> KeyRecord | None:
        """Mark revoked (idempotent: a revoked key keeps its first ``revoked_at``).

        None when there is no such key in that account.
        """

    async def set_hash(self, kid: str, hashed: str) -> None:
        """Replace a key's hash (argon2 parameters upgraded)."""

    async def set_check(self, kid: str, check: str) -> None:
        """Set a key's check value (a key created before check values, on its first use)."""

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        """Write ``last_used_at`` for several kids at once."""

    async def get_account(self, account_id: str) -> Account | None: ...

    async def put_account(self, account: Account) -> None:
        """Create or replace an account (plan and custom limits)."""

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` for every change, local or (for shared stores) remote."""

    async def start(self) -> None:
        """Begin background work (Redis pub/sub). Idempotent; needs a running loop."""

    async def aclose(self) -> None: ...
