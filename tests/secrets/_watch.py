"""Key material watched across the whole suite (issue 6, item 4).

``SecretWatch`` records every key generated (``KeyFormat.generate``) and every admin token
configured (``Config``, ``AdminTokenVerifier``) while a test runs, captures every log
record at DEBUG through a handler on the root logger, and at teardown finds any record
(message, formatted exception, stack) holding one of those tokens or 16 characters in a
row of a key's secret part. ``tests/conftest.py`` applies it to every test.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from keylimit import Config
from keylimit.auth._keys import CRC_LEN, SECRET_LEN, KeyFormat, ParsedKey
from keylimit.management import AdminTokenVerifier

FRAGMENT = 16
"""A run this long of a key's secret part counts as a leak (the secret is 32 characters)."""
MIN_ADMIN_TOKEN = 8
"""Shorter admin tokens (a test's ``"x"``) would match ordinary words; they are not watched."""
_RUN = re.compile(rf"[0-9A-Za-z]{{{FRAGMENT},}}")


def secret_of(token: str) -> str:
    """The random secret part of a key token (between the kid and the checksum)."""
    return token[-(CRC_LEN + SECRET_LEN) : -CRC_LEN]


class SecretWatch(logging.Handler):
    """A log handler that keeps every record's text, and the secrets to look for in it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tokens: set[str] = set()
        self.fragments: set[str] = set()
        self.texts: list[tuple[str, str]] = []  # (logger name, everything the record would print)
        self._formatter = logging.Formatter()

    def add_key(self, token: str) -> None:
        self.tokens.add(token)
        secret = secret_of(token)
        self.fragments.update(secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1))

    def add_admin_token(self, token: object) -> None:
        if isinstance(token, str) and len(token) >= MIN_ADMIN_TOKEN:
            self.tokens.add(token)

    def emit(self, record: logging.LogRecord) -> None:
        parts: list[str] = []
        try:
            parts.append(record.getMessage())
        except Exception:  # a record that cannot format: its raw parts still count
            parts.append(f"{record.msg!r} {record.args!r}")
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        self.texts.append((record.name, "\n".join(parts)))

    def leaks(self, texts: Iterable[tuple[str, str]] | None = None) -> list[str]:
        """Descriptions of every text that holds a watched token or secret fragment."""
        found: list[str] = []
        for where, text in self.texts if texts is None else texts:
            hit = self.find(text)
            if hit is not None:
                found.append(f"{where}: {hit} in {text[:300]!r}")
        return found

    def find(self, text: str) -> str | None:
        """What ``text`` leaks ("a key", "a key's secret", "an admin token"), or None."""
        for token in self.tokens:
            if token in text:
                return "a key or admin token"
        if self.fragments:
            for run in _RUN.finditer(text):
                chars = run.group()
                for i in range(len(chars) - FRAGMENT + 1):
                    if chars[i : i + FRAGMENT] in self.fragments:
                        return "16 characters of a key's secret"
        return None


@contextmanager
def watching(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretWatch]:
    """Record keys and admin tokens made and every log record, for the duration."""
    watch = SecretWatch()
    generate = KeyFormat.generate
    post_init = Config.__post_init__
    verifier_init = AdminTokenVerifier.__init__

    def recording_generate(self: KeyFormat, *args: Any, **kwargs: Any) -> ParsedKey:
        parsed = generate(self, *args, **kwargs)
        watch.add_key(parsed.token)
        return parsed

    def recording_post_init(self: Config) -> None:
        post_init(self)
        watch.add_admin_token(self.admin_token)

    def recording_verifier_init(self: AdminTokenVerifier, admin_token: str | None) -> None:
        verifier_init(self, admin_token)
        watch.add_admin_token(admin_token)

    # Class attributes: instances have __slots__, but the methods live on the class.
    monkeypatch.setattr(KeyFormat, "generate", recording_generate)
    monkeypatch.setattr(Config, "__post_init__", recording_post_init)
    monkeypatch.setattr(AdminTokenVerifier, "__init__", recording_verifier_init)
    root = logging.getLogger()
    level = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(level)
