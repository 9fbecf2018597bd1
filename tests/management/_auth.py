"""The ``authenticate`` callable the management app takes, built from real parts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from keylimit import InvalidKey, KeyManager, MissingKey, Principal


def authenticator_for(manager: KeyManager) -> Callable[[bytes | None, str | None], Awaitable[Principal]]:
    async def authenticate(header: bytes | None, client: str | None) -> Principal:
        if not header:
            raise MissingKey()
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingKey()
        parsed = manager.key_format.parse(token.strip())
        if parsed is None:
            raise InvalidKey()
        record = await manager.store.get_key(parsed.kid)
        if record is None or not record.is_usable(manager.clock()):
            raise InvalidKey()
        if not await asyncio.to_thread(manager.hasher.verify, record.hash, parsed.token):
            raise InvalidKey()
        account = await manager.get_account(record.account_id)
        return Principal(
            key_id=record.id,
            account_id=record.account_id,
            key_type=record.key_type,
            scopes=frozenset(record.scopes),
            plan=account.plan,
            limits=account.limits,
            display_hint=record.hint,
        )

    return authenticate
