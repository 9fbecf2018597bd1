"""Creating, listing and revoking keys, and setting plans: what the management API and CLI share."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

from .._clock import Clock, system_clock
from .._errors import BadRequest
from .._models import Account, KeyRecord, KeyType, Limits, Scope
from ..auth._hashing import Hasher, key_check
from ..auth._keys import KeyFormat, is_valid_kid
from ..ratelimit._plans import Plans
from ..stores import KeyStore

_ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
MAX_NAME = 128


def validate_account_id(account_id: str) -> str:
    if not isinstance(account_id, str) or not _ACCOUNT_RE.fullmatch(account_id):
        raise BadRequest(
            "account_id must be 1 to 128 characters: letters, digits and _ . : @ -, starting with a letter or digit",
            param="account_id",
        )
    return account_id


def parse_key_id(key_id: str) -> str | None:
    """The kid of ``key_{kid}``, or None if it is not a key id."""
    if isinstance(key_id, str) and key_id.startswith("key_") and is_valid_kid(key_id[4:]):
        return key_id[4:]
    return None


class KeyManager:
    def __init__(
        self,
        store: KeyStore,
        *,
        key_format: KeyFormat | None = None,
        hasher: Hasher | None = None,
        plans: Plans | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.key_format = key_format or KeyFormat()
        self.hasher = hasher or Hasher()
        self.plans = plans or Plans()
        self.clock = clock

    def __repr__(self) -> str:
        return f"KeyManager(store={self.store!r}, prefix={self.key_format.prefix!r})"

    async def create_key(
        self,
        account_id: str,
        name: str,
        *,
        key_type: KeyType = KeyType.SDK,
        scopes: Iterable[Scope] = (Scope.FULL,),
        expires_at: float | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the plaintext token, which is never available again."""
        validate_account_id(account_id)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
            raise BadRequest(f"name must be 1 to {MAX_NAME} printable characters", param="name")
        scope_set = tuple(sorted(set(scopes), key=list(Scope).index))
        if not scope_set:
            raise BadRequest("scopes must name at least one of: full, inference, read", param="scopes")
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise BadRequest("expires_at must be in the future", param="expires_at")
        parsed = self.key_format.generate(key_type)
        hashed = await asyncio.to_thread(self.hasher.hash, parsed.token)
        record = KeyRecord(
            kid=parsed.kid,
            account_id=account_id,
            name=name,
            key_type=key_type,
            scopes=scope_set,
            hash=hashed,
            hint=self.key_format.hint(parsed.token, key_type, parsed.kid),
            created_at=now,
            expires_at=expires_at,
            check=key_check(parsed.token),
        )
        if self.plans.default != "free" and await self.store.get_account(account_id) is None:
            # Stores create a missing account on the built-in default plan; this one's differs.
            await self.store.put_account(Account(account_id, self.plans.default))
        await self.store.add_key(record)
        return record, parsed.token

    async def list_keys(self, account_id: str) -> list[KeyRecord]:
        validate_account_id(account_id)
        return await self.store.list_keys(account_id)

    async def revoke_key(self, account_id: str, key_id: str) -> KeyRecord | None:
        """The revoked record; None when that account has no such key."""
        validate_account_id(account_id)
        kid = parse_key_id(key_id)
        if kid is None:
            return None
        return await self.store.revoke_key(account_id, kid, self.clock())

    async def get_account(self, account_id: str) -> Account:
        validate_account_id(account_id)
        return await self.store.get_account(account_id) or Account(account_id, self.plans.default)

    async def set_plan(self, account_id: str, plan: str, limits: Limits | None = None) -> Account:
        validate_account_id(account_id)
        if plan not in self.plans:
            raise BadRequest(f"unknown plan {plan!r}; plans: {', '.join(self.plans.names())}", param="plan")
        if limits is None and self.plans.needs_custom(plan):
            raise BadRequest(f"plan {plan!r} needs the account's own limits", param="limits")
        account = Account(account_id, plan, limits)
        await self.store.put_account(account)
        return account

    def limits_of(self, account: Account) -> Limits:
        return self.plans.resolve(account.plan, account.limits)
