"""The rate limit headers of every limited response, built from one ``Decision``.

``X-Ratelimit-*`` as the reference documents them, OpenAI's ``x-ratelimit-reset-*``
durations, and optionally the IETF draft ``RateLimit-Policy`` / ``RateLimit`` pair
(draft-ietf-httpapi-ratelimit-headers, structured-field form). This is on the path of
every request: the parts that depend only on the plan are built once per plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._types import Message, Send
from ..backends._base import REQUESTS, Decision, Vector

Header = tuple[bytes, bytes]

LIMIT_REQUESTS = b"x-ratelimit-limit-requests"
REMAINING_REQUESTS = b"x-ratelimit-remaining-requests"
LIMIT_PROMPT = b"x-ratelimit-limit-prompt-tokens"
REMAINING_PROMPT = b"x-ratelimit-remaining-prompt-tokens"
LIMIT_COMPLETION = b"x-ratelimit-limit-completion-tokens"
REMAINING_COMPLETION = b"x-ratelimit-remaining-completion-tokens"
RESET = b"x-ratelimit-reset"
RESET_REQUESTS = b"x-ratelimit-reset-requests"
RESET_TOKENS = b"x-ratelimit-reset-tokens"
POLICY = b"ratelimit-policy"
RATELIMIT = b"ratelimit"

_NAMES = (b'"requests"', b'"prompt-tokens"', b'"completion-tokens"')


def is_rate_limit_header(name: bytes) -> bool:
    """A header this layer owns (so an upstream's own is dropped, not doubled)."""
    return name.startswith(b"x-ratelimit-") or name in (RATELIMIT, POLICY)


def rate_limit_headers(decision: Decision, now: float, *, ietf: bool = False) -> list[Header]:
    """The headers for ``decision``, taken at ``now``.

    The reset durations say when the current window ends; on a refusal, the refused
    dimension's says instead when the request will fit (as ``Retry-After`` does).
    """
    remaining = decision.remaining
    reset_at = decision.reset_at
    reset_in = reset_at - now
    if decision.exceeded is None and not ietf:  # the common case, written out
        reset = _duration(math.ceil(reset_in * 1000)) if reset_in > 0 else b"0s"
        return [
            *_plan_headers(decision.limits, decision.window, False),
            (REMAINING_REQUESTS, b"%d" % remaining[0]),
            (REMAINING_PROMPT, b"%d" % remaining[1]),
            (REMAINING_COMPLETION, b"%d" % remaining[2]),
            (RESET, b"%d" % math.ceil(reset_at)),
            (RESET_REQUESTS, reset),
            (RESET_TOKENS, reset),
        ]
    reset_in = max(0.0, reset_in)
    waits = [reset_in, reset_in, reset_in]
    if decision.exceeded is None:
        reset_requests = reset_tokens = openai_duration(reset_in)
    else:
        waits[decision.exceeded] = decision.retry_after
        reset_requests, reset_tokens = openai_duration(waits[REQUESTS]), openai_duration(max(waits[1], waits[2]))
    headers = list(_plan_headers(decision.limits, decision.window, ietf))
    headers += (
        (REMAINING_REQUESTS, b"%d" % remaining[0]),
        (REMAINING_PROMPT, b"%d" % remaining[1]),
        (REMAINING_COMPLETION, b"%d" % remaining[2]),
        (RESET, b"%d" % math.ceil(decision.reset_at)),
        (RESET_REQUESTS, reset_requests),
        (RESET_TOKENS, reset_tokens),
    )
    if ietf:
        headers.append(
            (RATELIMIT, b", ".join(b"%s;r=%d;t=%d" % (_NAMES[d], remaining[d], math.ceil(waits[d])) for d in range(3)))
        )
    return headers


_PLAN_HEADERS: dict[tuple[Vector, float], tuple[Header, ...]] = {}
"""The plain (not IETF) plan headers by (limits, window): few plans, so few entries."""
_DURATIONS: dict[int, bytes] = {}
"""Durations by millisecond: at most a window's worth (60,000 for a minute) of short strings."""
_CACHED = 65536


def _plan_headers(limits: Vector, window: float, ietf: bool) -> tuple[Header, ...]:
    if not ietf:
        cached = _PLAN_HEADERS.get((limits, window))
        if cached is not None:
            return cached
    headers = [
        (LIMIT_REQUESTS, b"%d" % limits[0]),
        (LIMIT_PROMPT, b"%d" % limits[1]),
        (LIMIT_COMPLETION, b"%d" % limits[2]),
    ]
    if ietf:
        w = math.ceil(window)
        headers.append((POLICY, b", ".join(b"%s;q=%d;w=%d" % (_NAMES[d], limits[d], w) for d in range(3))))
        return tuple(headers)
    if len(_PLAN_HEADERS) < _CACHED:  # accounts with limits of their own add entries: bounded
        _PLAN_HEADERS[(limits, window)] = tuple(headers)
    return tuple(headers)


def openai_duration(seconds: float) -> bytes:
    """A duration as OpenAI writes it (Go's notation): ``120ms``, ``1s``, ``1.5s``, ``6m0s``.

    Rounded up to the millisecond, so that a client that waits that long is never early.
    """
    return _duration(math.ceil(seconds * 1000) if seconds > 0 else 0)


def _duration(ms: int) -> bytes:
    text = _DURATIONS.get(ms)
    if text is not None:
        return text
    text = _format_duration(ms)
    if len(_DURATIONS) < _CACHED:
        _DURATIONS[ms] = text
    return text


def _format_duration(ms: int) -> bytes:
    if ms == 0:
        return b"0s"
    if ms < 1000:
        return b"%dms" % ms
    whole, frac = divmod(ms, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs}.{frac:03d}".rstrip("0") if frac else f"{secs}"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return f"{text}s".encode()


def with_headers(send: Send, headers: list[Header]) -> Send:
    """``send`` with ``headers`` added to the response start (an app's own rate limit headers replaced)."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = message.get("headers", ())
            message["headers"] = replace_rate_limit_headers(raw, headers, any(is_rate_limit_header(n) for n, _ in raw))
        await send(message)

    return send_with_headers


def replace_rate_limit_headers(raw: Sequence[Header], headers: list[Header], owned: bool) -> list[Header]:
    """The app's headers without its own rate limit headers (when ``owned``), then ours."""
    if owned:
        return [h for h in raw if not is_rate_limit_header(h[0])] + headers
    return [*raw, *headers]
