"""What a request asks for: ``inspect_request`` reads an OpenAI-style JSON body for its
prompt estimate, its ``max_tokens`` reservation, and, for a stream that did not ask for
``usage``, the body rewritten to ask for it. What the response reports is read by the taps
(``_taps``).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .._diagnostics import get_logger, report_bug
from ..ratelimit._tokens import TokenCounter
from . import _json

logger = get_logger("keylimit.limits")

MAX_RESERVE = 1 << 53


class TokenRequest(NamedTuple):
    """A JSON request body that carries tokens (chat, completions or embeddings).

    A named tuple, as ``Decision`` is: one is built on every request.
    """

    body: bytes
    """What to forward: the original bytes, or rewritten to ask for usage."""
    prompt_tokens: int
    reserve: int
    """``max_tokens`` (times ``n``) when the body sets it, else 0."""
    generates: bool
    """It asks for completion tokens (``messages`` or ``prompt``), not only embeddings."""
    strip_usage: bool
    """We added ``stream_options.include_usage``: strip usage from the stream."""


def inspect_request(raw: bytes, counter: TokenCounter) -> TokenRequest | None:
    """What a request body costs, decided from the body alone (never from its headers).

    None when it carries no tokens: empty, or JSON that is not an object with ``messages``,
    ``prompt`` or ``input``. A body that is not JSON to keylimit (``_json``) may still be
    read as JSON by the app (many servers parse whatever the content type says, and other
    parsers accept ``NaN``, a BOM or lone surrogates): it is charged a prompt estimated
    from its length, and its response is read as any other. Never raises.
    """
    try:
        body = _json.loads(raw)
    except ValueError:
        return _unreadable(raw, counter) if raw.strip() else None
    if not isinstance(body, dict):
        return None
    generates = "messages" in body or "prompt" in body
    if not generates and "input" not in body:
        return None
    try:
        prompt_tokens = max(0, int(counter.count_prompt(body)))
    except Exception as exc:
        report_bug(logger, "the token counter's count_prompt (the prompt is estimated from the body's length)", exc)
        return _unreadable(raw, counter)
    strip_usage = False
    if generates and body.get("stream") is True:
        options = body.get("stream_options")
        if options is None or (isinstance(options, dict) and options.get("include_usage") is not True):
            asked = _ask_for_usage(raw, body, options)
            if asked is not None:
                raw, strip_usage = asked, True
    reserve = _reserve(body) if generates else 0
    # tuple.__new__ skips the named tuple's Python-level __new__ (every field is given).
    return _new(TokenRequest, (raw, prompt_tokens, reserve, generates, strip_usage))


def _unreadable(raw: bytes, counter: TokenCounter) -> TokenRequest:
    """A body keylimit cannot read as a token request: its prompt estimated from its text."""
    try:
        prompt_tokens = max(0, int(counter.count_text(raw.decode("utf-8", "replace"))))
    except Exception as exc:
        report_bug(logger, "the token counter's count_text (one token is counted per byte)", exc)
        prompt_tokens = len(raw)
    return _new(TokenRequest, (raw, prompt_tokens, 0, True, False))


_new = tuple.__new__


_INCLUDE_USAGE = b'"stream_options":{"include_usage":true}}'
_LONG_NUMBER = re.compile(rb"\d{19}")
"""Digits enough to be an integer beyond 64 bits, which orjson reads as a float."""


def _ask_for_usage(raw: bytes, body: dict[str, Any], options: dict[str, Any] | None) -> bytes | None:
    """``raw`` with ``stream_options.include_usage`` set; None when it cannot be written exactly.

    Without ``stream_options``, the member is added before the closing brace and every
    other byte stays as the client sent it. Otherwise the body is written anew, unless it
    may hold an integer orjson cannot keep or nests too deep to write: then keylimit does
    not ask, and the stream's text is counted instead.
    """
    text = raw.rstrip()
    if "stream_options" not in body and text.startswith(b"{") and text.endswith(b"}"):
        return text[:-1] + b"," + _INCLUDE_USAGE
    if _LONG_NUMBER.search(raw):
        return None
    try:
        return _json.dumps({**body, "stream_options": {**(options or {}), "include_usage": True}})
    except TypeError:
        return None


def _reserve(body: dict[str, Any]) -> int:
    max_tokens = token_count(body.get("max_completion_tokens", body.get("max_tokens")))
    return 0 if max_tokens is None else min(max_tokens * (token_count(body.get("n")) or 1), MAX_RESERVE)


def token_count(value: object) -> int | None:
    """``value`` if it is a whole number of tokens (not a bool, not negative), else None.

    Capped at ``MAX_RESERVE``: a larger count is no real one, and the counters (floats)
    could not hold it, so settling it would fail and charge nothing at all.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value if value <= MAX_RESERVE else MAX_RESERVE
    return None
