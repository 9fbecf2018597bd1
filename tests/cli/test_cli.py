from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keylimit import Hasher, InvalidKey, KeyFormat, KeyStatus, KeyType, Scope
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST
from keylimit.stores.sqlite import SQLiteKeyStore

CHEAP_ARGON2 = {
    f"KEYLIMIT_ARGON2_{name.upper()}": str(getattr(CHEAPEST, name))
    for name in ("time_cost", "memory_cost", "parallelism")
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def env(db: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYLIMIT_")}
    return {**clean, **CHEAP_ARGON2, "KEYLIMIT_KEYS_URL": f"sqlite:///{db}"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keylimit", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(env: dict[str, str], *args: str) -> Any:
    done = run(env, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def test_create_prints_the_key_once_and_list_never_does(env: dict[str, str]) -> None:
    created = ok(env, "keys", "create", "--account", "acme", "--name", "prod-api")
    assert list(created)[:3] == ["id", "name", "key"]
    assert created["id"].startswith("key_")
    assert created["name"] == "prod-api"
    assert created["key"].startswith("forii_sk_")
    assert created["status"] == "active"
    assert created["type"] == "sdk"
    assert created["scopes"] == ["full"]
    assert created["created"].endswith("Z")

    listed = run(env, "keys", "list", "--account", "acme")
    assert listed.returncode == 0
    assert created["key"] not in listed.stdout
    body = json.loads(listed.stdout)
    assert body["object"] == "list"
    assert [k["id"] for k in body["data"]] == [created["id"]]
    assert "key" not in body["data"][0]
    assert ok(env, "keys", "list", "--account", "other") == {"object": "list", "data": []}


async def test_a_key_created_by_the_cli_is_found_at_once_by_this_process(env: dict[str, str], db: Path) -> None:
    created = ok(
        env,
        *("keys", "create", "--account", "acme", "--name", "ci", "--type", "api"),
        *("--scope", "inference", "--scope", "read", "--expires-at", "2099-01-01T00:00:00Z"),
    )
    token = created["key"]
    parsed = KeyFormat().parse(token)
    assert parsed is not None
    assert parsed.key_type is KeyType.API
    store = SQLiteKeyStore(db)
    try:
        record = await store.get_key(parsed.kid)
        assert record is not None
        assert record.account_id == "acme"
        assert record.scopes == (Scope.INFERENCE, Scope.READ)
        assert record.expires_at == 4070908800.0
        assert Hasher(CHEAPEST).verify(record.hash, token)
        assert not Hasher(CHEAPEST).verify(record.hash, token[:-1] + "x")
    finally:
        await store.aclose()


async def test_the_authenticator_accepts_a_cli_key_at_once_and_refuses_it_once_revoked(
    env: dict[str, str], db: Path
) -> None:
    created = ok(env, "keys", "create", "--account", "acme", "--name", "live")
    header = f"Bearer {created['key']}".encode()
    store = SQLiteKeyStore(db)
    authenticator = Authenticator(store, hasher=Hasher(CHEAPEST))
    made = [authenticator]

    def fresh_auth(store: SQLiteKeyStore) -> Authenticator:
        made.append(Authenticator(store, hasher=Hasher(CHEAPEST)))
        return made[-1]

    try:
        principal = await authenticator.authenticate(header, "127.0.0.1")
        assert (principal.key_id, principal.account_id, principal.plan) == (created["id"], "acme", "free")
        # Another process's changes reach this one when its cache entry expires; a fresh
        # authenticator (nothing cached) sees them at once.
        ok(env, "accounts", "set-plan", "acme", "pro")
        assert (await fresh_auth(store).authenticate(header, "127.0.0.1")).plan == "pro"
        ok(env, "keys", "revoke", "--account", "acme", created["id"])
        with pytest.raises(InvalidKey):
            await fresh_auth(store).authenticate(header, "127.0.0.1")
    finally:
        for each in made:
            await each.aclose()
        await store.aclose()


def test_revoke_is_idempotent(env: dict[str, str]) -> None:
    key_id = ok(env, "keys", "create", "--account", "acme", "--name", "old")["id"]
    assert ok(env, "keys", "revoke", "--account", "acme", key_id) == {"id": key_id, "status": "revoked"}
    assert ok(env, "keys", "revoke", "--account", "acme", key_id) == {"id": key_id, "status": "revoked"}
    (listed,) = ok(env, "keys", "list", "--account", "acme")["data"]
    assert listed["status"] == KeyStatus.REVOKED.value
    assert listed["revoked_at"].endswith("Z")


def test_revoke_of_another_accounts_key_is_not_found(env: dict[str, str]) -> None:
    key_id = ok(env, "keys", "create", "--account", "acme", "--name", "mine")["id"]
    done = run(env, "keys", "revoke", "--account", "intruder", key_id)
    assert done.returncode == 1
    assert done.stderr == "keylimit: error: account 'intruder' has no key with that id\n"
    assert ok(env, "keys", "list", "--account", "acme")["data"][0]["status"] == "active"


def test_accounts_show_and_set_plan(env: dict[str, str]) -> None:
    assert ok(env, "accounts", "show", "acme") == {
        "id": "acme",
        "object": "account",
        "plan": "free",
        "limits": {"requests": 60, "prompt_tokens": 100_000, "completion_tokens": 10_000},
        "custom_limits": False,
    }
    assert ok(env, "accounts", "set-plan", "acme", "pro")["limits"]["requests"] == 6000
    custom = ok(
        env, "accounts", "set-plan", "acme", "enterprise", "--rpm", "7", "--prompt-tpm", "8", "--completion-tpm", "9"
    )
    assert custom["plan"] == "enterprise"
    assert custom["limits"] == {"requests": 7, "prompt_tokens": 8, "completion_tokens": 9}
    assert ok(env, "accounts", "show", "acme") == custom
    # One number alone overrides the plan's own.
    starter = ok(env, "accounts", "set-plan", "acme", "starter", "--rpm", "1")
    assert starter["limits"] == {"requests": 1, "prompt_tokens": 1_000_000, "completion_tokens": 100_000}
    assert starter["custom_limits"] is True


def test_plans_come_from_the_same_settings_as_the_server(env: dict[str, str]) -> None:
    env = {**env, "KEYLIMIT_PLAN_GOLD": "1,2,3", "KEYLIMIT_DEFAULT_PLAN": "gold"}
    assert ok(env, "accounts", "show", "acme")["limits"] == {"requests": 1, "prompt_tokens": 2, "completion_tokens": 3}
    assert ok(env, "accounts", "set-plan", "acme", "gold")["plan"] == "gold"


def test_key_prefix_setting(env: dict[str, str]) -> None:
    created = ok({**env, "KEYLIMIT_KEY_PREFIX": "acme"}, "keys", "create", "--account", "a", "--name", "n")
    assert created["key"].startswith("acme_sk_")


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        # command line
        ((), 2, "the following arguments are required: COMMAND"),
        (("keys",), 2, "the following arguments are required: ACTION"),
        (("nope",), 2, "invalid choice: 'nope'"),
        (("keys", "create", "--account", "acme"), 2, "the following arguments are required: --name"),
        (("keys", "create", "--account", "a", "--name", "n", "--type", "root"), 2, "invalid choice: 'root'"),
        (("keys", "create", "--account", "a", "--name", "n", "--scope", "admin"), 2, "invalid choice: 'admin'"),
        (("keys", "revoke", "--account", "a"), 2, "the following arguments are required: KEY_ID"),
        (("accounts", "set-plan", "a", "pro", "--rpm", "-1"), 2, "argument --rpm: must be a whole number"),
        (("accounts", "set-plan", "a", "pro", "--rpm", "lots"), 2, "argument --rpm: must be a whole number"),
        (("keys", "list", "--account", "a", "--bogus"), 2, "unrecognized arguments: --bogus"),
        # values
        (("keys", "create", "--account", "a b", "--name", "n"), 2, "account_id must be 1 to 128 characters"),
        (("keys", "create", "--account", "a", "--name", " "), 2, "name must be 1 to 128 printable characters"),
        (("keys", "create", "--account", "a", "--name", "n", "--expires-at", "soon"), 2, "expires_at must be Unix"),
        (("keys", "create", "--account", "a", "--name", "n", "--expires-at", "1000"), 2, "expires_at must be in the"),
        (("accounts", "set-plan", "a", "gold"), 2, "unknown plan 'gold'; plans: free, starter, pro, enterprise"),
        (("accounts", "set-plan", "a", "enterprise"), 2, "plan 'enterprise' needs the account's own limits"),
        (("accounts", "set-plan", "a", "enterprise", "--rpm", "5"), 2, "plan 'enterprise' has no limits of its own"),
        # servers (refused before serving)
        (("demo", "--port", "http"), 2, "argument --port: invalid int value: 'http'"),
        (("proxy", "--upstream", "ftp://127.0.0.1:9"), 2, "upstream: expected http://host[:port][/path]"),
        # other failures
        (("keys", "revoke", "--account", "a", "key_nope"), 1, "account 'a' has no key with that id"),
    ],
)
def test_errors_are_one_line_on_stderr(env: dict[str, str], args: tuple[str, ...], status: int, message: str) -> None:
    done = run(env, *args)
    assert done.returncode == status
    assert done.stdout == ""
    assert done.stderr.startswith("keylimit: error: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_bad_configuration_names_the_setting(env: dict[str, str]) -> None:
    done = run({**env, "KEYLIMIT_KEYS_URL": "postgres://db"}, "keys", "list", "--account", "a")
    assert done.returncode == 1
    assert done.stderr.startswith("keylimit: error: KEYLIMIT_KEYS_URL: unknown store 'postgres://db'")
    assert done.stderr.count("\n") == 1


def test_unreachable_store_is_an_error_not_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/keys.db"
    done = run({**env, "KEYLIMIT_KEYS_URL": url}, "keys", "create", "--account", "a", "--name", "n")
    assert done.returncode == 1
    assert done.stderr.startswith("keylimit: error: the SQLite key store")
    assert "Traceback" not in done.stderr


def test_help(env: dict[str, str]) -> None:
    done = run(env, "--help")
    assert done.returncode == 0
    for command in ("keys", "accounts", "demo", "proxy"):
        assert command in done.stdout
