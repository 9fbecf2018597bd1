"""What only the SQLite store does: URLs, the schema version, a shared file, I/O errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from keylimit import ConfigurationError, KeyFormat, KeyStoreUnavailable
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST, Hasher, key_check
from keylimit.stores import open_key_store
from keylimit.stores.sqlite import SCHEMA_VERSION, SQLiteKeyStore
from tests.stores.test_contract import make_record


@pytest.mark.parametrize(
    ("url", "path"),
    [
        # three slashes: relative to the working directory
        ("sqlite:///keylimit.db", "keylimit.db"),
        ("sqlite:///data/keys.db", "data/keys.db"),
        # four slashes: absolute
        ("sqlite:////var/lib/keylimit/keys.db", "/var/lib/keylimit/keys.db"),
        ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
        # in memory, for one store's lifetime
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_url_names_the_file(url: str, path: str) -> None:
    store = open_key_store(url)
    assert isinstance(store, SQLiteKeyStore)
    assert store.path == path
    assert repr(store) == f"SQLiteKeyStore(path={path!r})"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/keys.db"])
def test_bad_url_names_the_setting(url: str) -> None:
    with pytest.raises(ConfigurationError, match="KEYLIMIT_KEYS_URL"):
        open_key_store(url)


async def test_in_memory_database_works_for_one_store() -> None:
    store = SQLiteKeyStore.from_url("sqlite:///:memory:")
    try:
        await store.add_key(make_record("AAAAAAAAAAA1"))
        assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")
    finally:
        await store.aclose()


async def test_first_use_creates_a_versioned_wal_schema(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    try:
        assert not path.exists()
        assert await store.get_key("AAAAAAAAAAA1") is None
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"keys", "accounts"} <= tables


# The schema keylimit created before keys had check values (user_version 1), verbatim.
SCHEMA_1 = """
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY, plan TEXT NOT NULL,
        requests INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER
    );
    CREATE TABLE keys (
        kid TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT NOT NULL, key_type TEXT NOT NULL,
        scopes TEXT NOT NULL, hash TEXT NOT NULL, hint TEXT NOT NULL, created_at REAL NOT NULL,
        status TEXT NOT NULL, expires_at REAL, revoked_at REAL, last_used_at REAL
    );
    CREATE INDEX keys_by_account ON keys (account_id, created_at, kid);
    PRAGMA user_version = 1;
"""


def schema_1_file(path: Path, kid: str, hashed: str) -> None:
    """A store file written by keylimit before check values: one account, one key."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA_1)
        conn.execute("INSERT INTO accounts VALUES ('acct_a', 'pro', NULL, NULL, NULL)")
        conn.execute(
            "INSERT INTO keys VALUES (?, 'acct_a', ?, 'sdk', 'full', ?, ?, ?, 'active', NULL, NULL, ?)",
            (kid, f"name of {kid}", hashed, f"forii_sk_{kid}\u2026abcd", 1_700_000_000.0, 1_700_000_030.0),
        )
        conn.commit()
    finally:
        conn.close()


async def test_a_store_file_from_schema_1_is_migrated_and_keeps_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    schema_1_file(path, "AAAAAAAAAAA1", "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA1")
    store = SQLiteKeyStore(path)
    try:
        assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1", last_used_at=1_700_000_030.0)
        account = await store.get_account("acct_a")
        assert account is not None
        assert account.plan == "pro"
        await store.set_check("AAAAAAAAAAA1", "0a1bc2d3")
        await store.add_key(make_record("BBBBBBBBBBB1", check="4e5f6a7b"))
        assert [(r.kid, r.check) for r in await store.list_keys("acct_a")] == [
            ("AAAAAAAAAAA1", "0a1bc2d3"),
            ("BBBBBBBBBBB1", "4e5f6a7b"),
        ]
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened = SQLiteKeyStore(path)  # a migrated file opens as it is
    try:
        assert (await reopened.get_key("AAAAAAAAAAA1")) == make_record(
            "AAAAAAAAAAA1", last_used_at=1_700_000_030.0, check="0a1bc2d3"
        )
    finally:
        await reopened.aclose()


async def test_a_key_in_a_schema_1_file_authenticates_and_gains_its_check(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    parsed = KeyFormat().generate()
    hasher = Hasher(CHEAPEST)
    schema_1_file(path, parsed.kid, hasher.hash(parsed.token))
    store = SQLiteKeyStore(path)
    auth = Authenticator(store, hasher=hasher)
    try:
        principal = await auth.authenticate(f"Bearer {parsed.token}".encode(), None)
        assert (principal.key_id, principal.account_id, principal.plan) == (f"key_{parsed.kid}", "acct_a", "pro")
        await auth.aclose()
        stored = await store.get_key(parsed.kid)
        assert stored is not None
        assert stored.check == key_check(parsed.token)
    finally:
        await store.aclose()


async def test_a_newer_schema_is_refused_not_damaged(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteKeyStore(path)
    try:
        with pytest.raises(KeyStoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}"):
            await store.get_key("AAAAAAAAAAA1")
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


@pytest.mark.parametrize(
    "where",
    [
        # the directory does not exist
        "missing/dir/keys.db",
        # the path is a directory
        ".",
    ],
)
async def test_an_unopenable_file_is_unavailable(tmp_path: Path, where: str) -> None:
    store = SQLiteKeyStore(tmp_path / where)
    try:
        with pytest.raises(KeyStoreUnavailable):
            await store.get_key("AAAAAAAAAAA1")
        with pytest.raises(KeyStoreUnavailable):
            await store.add_key(make_record("AAAAAAAAAAA1"))
    finally:
        await store.aclose()


async def test_a_garbage_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteKeyStore(path)
    try:
        with pytest.raises(KeyStoreUnavailable):
            await store.list_keys("acct_a")
    finally:
        await store.aclose()


async def test_a_malformed_row_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    try:
        await store.add_key(make_record("AAAAAAAAAAA1"))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE keys SET scopes = 'everything' WHERE kid = 'AAAAAAAAAAA1'")
        with pytest.raises(KeyStoreUnavailable, match="key_AAAAAAAAAAA1"):
            await store.get_key("AAAAAAAAAAA1")
    finally:
        await store.aclose()


async def test_a_locked_file_waits_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    try:
        await store.get_key("AAAAAAAAAAA1")  # schema in place
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process (the CLI) holds the write lock
        adding = asyncio.ensure_future(store.add_key(make_record("AAAAAAAAAAA1")))

        # The loop keeps running while the store waits on the lock (busy timeout).
        done, _ = await asyncio.wait([adding], timeout=0.2)
        assert not done

        other.execute("COMMIT")
        other.close()
        await adding
        assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")
    finally:
        await store.aclose()


async def test_the_store_works_again_after_aclose(tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    await store.add_key(make_record("AAAAAAAAAAA1"))
    await store.aclose()
    try:
        assert await store.get_key("AAAAAAAAAAA1") == make_record("AAAAAAAAAAA1")
    finally:
        await store.aclose()
