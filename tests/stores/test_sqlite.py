"""What only the SQLite store does: URLs, the schema version, a shared file, I/O errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from keylimit import ConfigurationError, KeyStoreUnavailable
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
