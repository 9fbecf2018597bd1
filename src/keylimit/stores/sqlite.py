"""``sqlite:///path.db``: keys in one SQLite file that several processes (server, CLI) share.

Every call runs on the store's own worker thread, which owns the one connection, so the
event loop never waits on the disk and the connection is never shared between threads.
The file is in WAL mode with a busy timeout, and each call is its own transaction, so a
key that another process has just committed is found by the next ``get_key``. Other
processes are not told of revocations or plan changes: their auth caches expire them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from .._errors import ConfigurationError, KeyStoreUnavailable
from .._models import Account, KeyRecord, KeyStatus
from ._base import Listener, StoreEvent
from ._codec import ACCOUNT_FIELDS, KEY_FIELDS, account_from_fields, account_to_fields, key_from_fields, key_to_fields

T = TypeVar("T")

SCHEMA_VERSION = 2
_MIGRATIONS: dict[int, str] = {
    # user_version N -> N+1
    0: """
        CREATE TABLE IF NOT EXISTS accounts (
            id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            requests INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER
        );
        CREATE TABLE IF NOT EXISTS keys (
            kid TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            name TEXT NOT NULL,
            key_type TEXT NOT NULL,
            scopes TEXT NOT NULL,
            hash TEXT NOT NULL,
            hint TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL
        );
        CREATE INDEX IF NOT EXISTS keys_by_account ON keys (account_id, created_at, kid);
    """,
    # Check values (``auth._hashing.key_check``). Existing keys have none until their next use;
    # a nullable column is added in place, so no row is rewritten.
    1: 'ALTER TABLE keys ADD COLUMN "check" TEXT',
}
# Statements built once from the codec's field names (constants, never input).
_KEY_COLUMNS = ", ".join(f'"{name}"' for name in KEY_FIELDS)  # quoted: CHECK is a keyword
_ACCOUNT_COLUMNS = ", ".join(ACCOUNT_FIELDS)
_INSERT_KEY = f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({', '.join('?' * len(KEY_FIELDS))})"  # noqa: S608
_SELECT_KEY = f"SELECT {_KEY_COLUMNS} FROM keys WHERE kid = ?"  # noqa: S608
_SELECT_ACCOUNT_KEY = f"SELECT {_KEY_COLUMNS} FROM keys WHERE kid = ? AND account_id = ?"  # noqa: S608
_SELECT_KEYS_OF = f"SELECT {_KEY_COLUMNS} FROM keys WHERE account_id = ? ORDER BY created_at, kid"  # noqa: S608
_ACCOUNT_VALUES = f"INTO accounts ({_ACCOUNT_COLUMNS}) VALUES ({', '.join('?' * len(ACCOUNT_FIELDS))})"
_INSERT_ACCOUNT_IF_NONE = f"INSERT OR IGNORE {_ACCOUNT_VALUES}"
_REPLACE_ACCOUNT = f"INSERT OR REPLACE {_ACCOUNT_VALUES}"
_SELECT_ACCOUNT = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?"  # noqa: S608


class SQLiteKeyStore:
    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = str(path)
        if not self.path:
            raise ConfigurationError("KEYLIMIT_KEYS_URL: the SQLite URL names no file (sqlite:///keylimit.db)")
        self.busy_timeout = busy_timeout
        self._listeners: list[Listener] = []
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread

    @classmethod
    def from_url(cls, url: str) -> SQLiteKeyStore:
        """``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``."""
        parts = urlsplit(url)
        if parts.netloc:
            raise ConfigurationError(
                "KEYLIMIT_KEYS_URL: a SQLite URL has three slashes before a relative path "
                "(sqlite:///keylimit.db) and four before an absolute one (sqlite:////var/lib/keylimit.db)"
            )
        return cls(unquote(parts.path[1:]))

    def __repr__(self) -> str:
        return f"SQLiteKeyStore(path={self.path!r})"

    # -- the worker thread -------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keylimit-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)
        except sqlite3.IntegrityError as exc:
            raise ValueError("key id already exists") from exc
        except (sqlite3.Error, OSError) as exc:
            self._close_connection()  # the next call starts afresh (file replaced, disk back)
            raise KeyStoreUnavailable(f"the SQLite key store {self.path!r} failed: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes use BEGIN IMMEDIATE.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if _user_version(conn) == SCHEMA_VERSION:
            return
        with _transaction(conn):
            version = _user_version(conn)  # another process may have migrated meanwhile
            if version > SCHEMA_VERSION:
                raise KeyStoreUnavailable(
                    f"the SQLite key store {self.path!r} has schema version {version}; "
                    f"this keylimit knows up to {SCHEMA_VERSION}. Upgrade keylimit."
                )
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _emit(self, event: StoreEvent) -> None:
        for listener in self._listeners:
            listener(event)

    # -- the KeyStore protocol ---------------------------------------------------------------

    async def add_key(self, record: KeyRecord) -> None:
        fields = key_to_fields(record)
        account = account_to_fields(Account(record.account_id))

        def add(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(_INSERT_ACCOUNT_IF_NONE, tuple(account.values()))
                conn.execute(_INSERT_KEY, tuple(fields.values()))

        await self._run(add)

    async def get_key(self, kid: str) -> KeyRecord | None:
        def get(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(_SELECT_KEY, (kid,)).fetchone()
            return None if row is None else key_from_fields(_as_dict(row))

        return await self._run(get)

    async def list_keys(self, account_id: str) -> list[KeyRecord]:
        def list_(conn: sqlite3.Connection) -> list[KeyRecord]:
            rows = conn.execute(_SELECT_KEYS_OF, (account_id,)).fetchall()
            return [key_from_fields(_as_dict(row)) for row in rows]

        return await self._run(list_)

    async def revoke_key(self, account_id: str, kid: str, at: float) -> KeyRecord | None:
        def revoke(conn: sqlite3.Connection) -> KeyRecord | None:
            with _transaction(conn):
                conn.execute(
                    "UPDATE keys SET status = ?, revoked_at = ? WHERE kid = ? AND account_id = ? AND status != ?",
                    (KeyStatus.REVOKED.value, float(at), kid, account_id, KeyStatus.REVOKED.value),
                )
                row = conn.execute(_SELECT_ACCOUNT_KEY, (kid, account_id)).fetchone()
            return None if row is None else key_from_fields(_as_dict(row))

        record = await self._run(revoke)
        if record is not None:
            self._emit(StoreEvent("key", kid))
        return record

    async def set_hash(self, kid: str, hashed: str) -> None:
        await self._run(lambda conn: conn.execute("UPDATE keys SET hash = ? WHERE kid = ?", (hashed, kid)))

    async def set_check(self, kid: str, check: str) -> None:
        await self._run(lambda conn: conn.execute('UPDATE keys SET "check" = ? WHERE kid = ?', (check, kid)))

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        rows = [(float(at), kid) for kid, at in used.items()]

        def touch(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany("UPDATE keys SET last_used_at = ? WHERE kid = ?", rows)

        await self._run(touch)

    async def get_account(self, account_id: str) -> Account | None:
        def get(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(_SELECT_ACCOUNT, (account_id,)).fetchone()
            return None if row is None else account_from_fields(_as_dict(row))

        return await self._run(get)

    async def put_account(self, account: Account) -> None:
        fields = account_to_fields(account)
        await self._run(lambda conn: conn.execute(_REPLACE_ACCOUNT, tuple(fields.values())))
        self._emit(StoreEvent("account", account.id))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, self._close_connection)
        executor.shutdown(wait=False)


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): writers queue on the busy timeout."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _as_dict(row: sqlite3.Row) -> dict[str, object]:
    return {name: row[name] for name in row.keys()}  # noqa: SIM118 - Row has no items()
