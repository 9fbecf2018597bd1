"""What keylimit's logs may say: key material redacted, and a bug logged once with its traceback.

``Redact`` rewrites a record's message, traceback, stack and string extras with keylimit
keys (any prefix), ``Bearer`` values and URL passwords cut out, before any handler sees
it. A filter on a logger sees only the records logged on that logger, never those that
propagate up from its children, so every ``keylimit.*`` logger carries its own: modules
get theirs from ``get_logger``, and the loggers named in ``LOGGERS`` are fitted when this
module is imported (the package imports it). keylimit adds no handler.
"""

from __future__ import annotations

import logging
import re
import traceback

LOGGERS = (
    "keylimit",
    "keylimit.auth",
    "keylimit.auth.refusals",
    "keylimit.limits",
    "keylimit.proxy",
    "keylimit.stores.redis",
)
"""Every logger name keylimit logs on (a test checks that no module uses another)."""

REDACTED = "[redacted]"

# A key is {prefix}_sk_{kid}_{secret}{crc} or {prefix}_{kid}_{secret}{crc}, all base62. The
# kid is public and kept; from 16 characters after it on, the rest is cut, whatever the
# prefix, and with the checksum missing or more glued to it. Each pattern starts with a
# literal or is tried only when its marker is there: the filter runs on every record logged.
_KEY = re.compile(r"(_[0-9A-Za-z]{12}_)[0-9A-Za-z]{16,}")
_KEY_MIN = 30
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/@'\"]+@")

# Attributes every LogRecord has; any other attribute came from ``extra``.
_PLAIN = vars(logging.LogRecord("", 0, "", 0, "", None, None))
_STANDARD = frozenset(_PLAIN) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with keylimit keys, ``Bearer`` values and URL passwords replaced."""
    if len(text) >= _KEY_MIN and "_" in text and _KEY.search(text):
        text = _KEY.sub(rf"\1{REDACTED}", text)
    if "bearer" in text.lower():
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return text


class Redact(logging.Filter):
    """Redacts a record in place (its traceback becomes redacted text) and lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format is left for logging to report
            message = None
        if message is not None:
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        if record.exc_info is not None and record.exc_info[0] is not None:
            # Formatted here so that no handler formats the original (or reads its frames' locals).
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        fields = vars(record)
        if len(fields) > len(_PLAIN):
            for name in fields.keys() - _STANDARD:
                value = fields[name]
                if isinstance(value, str):
                    fields[name] = redact(value)
        return True


REDACT = Redact()


def install(logger: logging.Logger) -> logging.Logger:
    """``logger`` with ``REDACT`` among its filters (once)."""
    if REDACT not in logger.filters:
        logger.addFilter(REDACT)
    return logger


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``, fitted with the redacting filter."""
    return install(logging.getLogger(name))


_reported: set[tuple[str, str, type[BaseException]]] = set()


def report_bug(logger: logging.Logger, where: str, exc: BaseException) -> None:
    """Log ``exc`` as a bug at ``where`` with its (redacted) traceback, once per place and type.

    For exceptions that are not a storage or client failure: the caller still answers the
    request where it can. Later occurrences at the same place are not logged again.
    """
    seen = (logger.name, where, type(exc))
    if seen in _reported:
        return
    _reported.add(seen)
    install(logger).error(
        "unexpected %s in %s (a bug; later ones here are not logged)",
        type(exc).__name__,
        where,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"bug": where},
    )


for _name in LOGGERS:
    get_logger(_name)
