"""KeyManager: what the management API and the CLI share."""

from __future__ import annotations

from keylimit import Argon2Params, Hasher, KeyManager, Limits, Plans
from keylimit.stores.memory import MemoryKeyStore


async def test_a_new_account_starts_on_the_configured_default_plan() -> None:
    plans = Plans({"trial": Limits(5, 500, 50), "pro": Limits(6000, 10**7, 10**6)}, default="trial")
    manager = KeyManager(MemoryKeyStore(), hasher=Hasher(Argon2Params(1, 8, 1)), plans=plans)
    await manager.create_key("acme", "first")
    account = await manager.get_account("acme")
    assert account.plan == "trial"
    assert manager.limits_of(account) == Limits(5, 500, 50)


async def test_a_new_key_keeps_the_accounts_plan() -> None:
    plans = Plans({"trial": Limits(5, 500, 50), "pro": Limits(6000, 10**7, 10**6)}, default="trial")
    manager = KeyManager(MemoryKeyStore(), hasher=Hasher(Argon2Params(1, 8, 1)), plans=plans)
    await manager.set_plan("acme", "pro")
    await manager.create_key("acme", "second")
    assert (await manager.get_account("acme")).plan == "pro"
