"""What keylimit's logs may hold: key material redacted from every keylimit logger's records,
and a bug logged once per place and type with its traceback."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

import keylimit
from keylimit import KeyFormat, KeyType, _diagnostics
from keylimit._diagnostics import REDACT, get_logger, redact, report_bug

SDK = KeyFormat().generate().token
API = KeyFormat("acme").generate(KeyType.API).token


def kid_of(token: str) -> str:
    return token.split("_")[-2]


@pytest.fixture(autouse=True)
def fresh_bug_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_diagnostics, "_reported", set())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # keylimit keys, whatever the prefix: the public kid stays, the secret goes
        (f"key {SDK} refused", f"key forii_sk_{kid_of(SDK)}_[redacted] refused"),
        (f"'{API}'", f"'acme_{kid_of(API)}_[redacted]'"),
        (f"{SDK[:-6]} (no checksum)", f"forii_sk_{kid_of(SDK)}_[redacted] (no checksum)"),
        (f"{SDK}xyz", f"forii_sk_{kid_of(SDK)}_[redacted]"),
        (SDK.removeprefix("forii_"), f"sk_{kid_of(SDK)}_[redacted]"),
        # Bearer values, the admin token's included
        ("Authorization: Bearer admin-token-1234", "Authorization: Bearer [redacted]"),
        ("(b'authorization', b'bearer s3cr3t.t0ken')", "(b'authorization', b'bearer [redacted]')"),
        # passwords in URLs
        ("redis://:hunter2@10.0.0.5:6379/0", "redis://:[redacted]@10.0.0.5:6379/0"),
        ("rediss://app:p%40ss@cache:6380 down", "rediss://app:[redacted]@cache:6380 down"),
        # nothing secret: unchanged
        ("refused acct:acct_1 key=key_ABCDEFGHIJKL", "refused acct:acct_1 key=key_ABCDEFGHIJKL"),
        ("kl:lim:{acct:acct_a} http://localhost:8080/v1/chat/completions", None),
        ("redis://127.0.0.1:6379/0 unavailable (ConnectFailed: ConnectionRefusedError)", None),
        ('File "/work/src/keylimit/backends/guarded.py", line 149, in _route', None),
    ],
)
def test_redact(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_every_keylimit_logger_redacts_and_none_has_a_handler() -> None:
    """A filter on a logger sees only its own records, so each keylimit logger needs one."""
    held: dict[str, logging.Logger] = {}
    for info in pkgutil.walk_packages(keylimit.__path__, "keylimit."):
        module = importlib.import_module(info.name)
        held.update((v.name, v) for v in vars(module).values() if isinstance(v, logging.Logger))
    assert set(held) <= set(_diagnostics.LOGGERS)
    for name in _diagnostics.LOGGERS:
        logger = logging.getLogger(name)
        assert REDACT in logger.filters, name
        assert logger.handlers == [], name


def test_a_record_reaches_every_handler_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="keylimit")
    child = logging.getLogger("keylimit.auth.refusals")  # propagates through keylimit.auth and keylimit
    try:
        raise ValueError(f"no account for {SDK}")
    except ValueError:
        child.warning(
            "refused %s from %s",
            SDK,
            "redis://:hunter2@cache:6379",
            exc_info=True,
            stack_info=True,
            extra={"identity": f"key:{API}"},
        )
    [record] = caplog.records
    assert record.getMessage() == (f"refused forii_sk_{kid_of(SDK)}_[redacted] from redis://:[redacted]@cache:6379")
    assert record.exc_info is None
    assert record.exc_text is not None
    assert record.exc_text.startswith("Traceback (most recent call last):")
    assert record.exc_text.endswith(f"ValueError: no account for forii_sk_{kid_of(SDK)}_[redacted]")
    assert record.stack_info is not None
    assert record.__dict__["identity"] == f"key:acme_{kid_of(API)}_[redacted]"
    text = caplog.text
    for secret in (SDK, API, SDK[-38:-6], API[-38:-6], "hunter2"):
        assert secret not in text


def test_get_logger_fits_a_new_logger_once() -> None:
    logger = get_logger("keylimit.tests.diagnostics")
    try:
        assert get_logger("keylimit.tests.diagnostics").filters == [REDACT]
    finally:
        del logging.root.manager.loggerDict["keylimit.tests.diagnostics"]
    assert logger.filters == [REDACT]


def fail(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        return raised


def test_report_bug_logs_once_per_place_and_type(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("keylimit.limits")
    for _ in range(3):
        report_bug(logger, "acquire on redis://", fail(TypeError(f"bad {SDK}")))
    report_bug(logger, "acquire on redis://", fail(KeyError("other type")))
    report_bug(logger, "peek on redis://", fail(TypeError("other place")))
    records = [r for r in caplog.records if r.name == "keylimit.limits"]
    assert [(r.__dict__["bug"], r.getMessage().split(" in ")[0]) for r in records] == [
        ("acquire on redis://", "unexpected TypeError"),
        ("acquire on redis://", "unexpected KeyError"),
        ("peek on redis://", "unexpected TypeError"),
    ]
    assert all(r.levelno == logging.ERROR for r in records)
    first = records[0].exc_text or ""
    assert "in fail\n    raise exc" in first
    assert SDK not in first
    assert first.endswith(f"TypeError: bad forii_sk_{kid_of(SDK)}_[redacted]")


def test_report_bug_redacts_on_a_logger_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """A logger outside keylimit's (an application's, passed in) is fitted before the record is made."""
    logger = logging.getLogger("tests.diagnostics.app")
    try:
        report_bug(logger, "a plug-in", fail(RuntimeError(f"Bearer {SDK}")))
        [record] = caplog.records
        assert record.exc_text is not None
        assert record.exc_text.endswith("RuntimeError: Bearer [redacted]")
    finally:
        logger.removeFilter(REDACT)
