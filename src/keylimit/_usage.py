"""What a request asks for: ``inspect_request`` reads an OpenAI-style JSON body for its
prompt estimate, its ``max_tokens`` reservation, and, for a stream that did not ask for
``usage``, the body rewritten to ask for it. What the response reports is read by the taps
(``_taps``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from . import _json
from ._tokens import TokenCounter

logger = logging.getLogger("keylimit.limits")

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
    """Read a JSON request body; None when it is not a token-bearing JSON object."""
    try:
        body = _json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, huge ints, deep nesting
        return None
    if not isinstance(body, dict):
        return None
    generates = "messages" in body or "prompt" in body
    if not generates and "input" not in body:
        return None
    try:
        prompt_tokens = max(0, int(counter.count_prompt(body)))
    except Exception:
        logger.exception("token counter failed; counting no prompt tokens for this request")
        return None
    strip_usage = False
    if generates and body.get("stream") is True:
        options = body.get("stream_options")
        if options is None or (isinstance(options, dict) and options.get("include_usage") is not True):
            raw = _ask_for_usage(raw, "stream_options" in body)
            strip_usage = True
    reserve = _reserve(body) if generates else 0
    # tuple.__new__ skips the named tuple's Python-level __new__ (every field is given).
    return _new(TokenRequest, (raw, prompt_tokens, reserve, generates, strip_usage))


_new = tuple.__new__


_INCLUDE_USAGE = b'"stream_options":{"include_usage":true}}'


def _ask_for_usage(raw: bytes, has_options: bool) -> bytes:
    """``raw`` (a JSON object) with ``stream_options.include_usage`` set.

    Without ``stream_options``, the member is added before the closing brace and every
    other byte stays as the client sent it. Otherwise the standard library rewrites the
    body: it reads and writes every number exactly, integers beyond 64 bits included.
    """
    text = raw.rstrip()
    if not has_options and text.startswith(b"{") and text.endswith(b"}"):
        return text[:-1] + b"," + _INCLUDE_USAGE
    body = json.loads(raw)
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


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


def is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")
