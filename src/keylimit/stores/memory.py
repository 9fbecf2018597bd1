"""``memory://``: a key store in this process's memory, for tests and experiments."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .._models import Account, KeyRecord, KeyStatus
from ._base import Listener, StoreEvent


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._accounts: dict[str, Account] = {}
        self._listeners: list[Listener] = []

    @classmethod
    def from_url(cls, url: str) -> MemoryKeyStore:
        return cls()

    def __repr__(self) -> str:
        return "MemoryKeyStore()"

    def _emit(self, event: StoreEvent) -> None:
        for listener in self._listeners:
            listener(event)

    async def add_key(self, record: KeyRecord) -> None:
        if record.kid in self._keys:
            raise ValueError("key id already exists")
        self._accounts.setdefault(record.account_id, Account(record.account_id))
        self._keys[record.kid] = record

    async def get_key(self, kid: str) -> KeyRecord | None:
        return self._keys.get(kid)

    async def list_keys(self, account_id: str) -> list[KeyRecord]:
        found = [r for r in self._keys.values() if r.account_id == account_id]
        return sorted(found, key=lambda r: (r.created_at, r.kid))

    async def revoke_key(self, account_id: str, kid: str, at: float) -> KeyRecord | None:
        record = self._keys.get(kid)
        if record is None or record.account_id != account_id:
            return None
        if record.status is not KeyStatus.REVOKED:
            record = dataclasses.replace(record, status=KeyStatus.REVOKED, revoked_at=at)
            self._keys[kid] = record
        self._emit(StoreEvent("key", kid))
        return record

    async def set_hash(self, kid: str, hashed: str) -> None:
        record = self._keys.get(kid)
        if record is not None:
            self._keys[kid] = dataclasses.replace(record, hash=hashed)

    async def set_check(self, kid: str, check: str) -> None:
        record = self._keys.get(kid)
        if record is not None:
            self._keys[kid] = dataclasses.replace(record, check=check)

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        for kid, at in used.items():
            record = self._keys.get(kid)
            if record is not None:
                self._keys[kid] = dataclasses.replace(record, last_used_at=at)

    async def get_account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    async def put_account(self, account: Account) -> None:
        self._accounts[account.id] = account
        self._emit(StoreEvent("account", account.id))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
