"""Which content codings keylimit asks an app for: only those whose responses it can read
``usage`` through (``_decoders``), and none when it will rewrite the stream to strip usage.

A response that comes in another coding anyway is charged conservatively (``_reading``).
"""

from __future__ import annotations

READABLE = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})
"""The content codings keylimit reads a response in."""

_ASKED = (b"gzip", b"deflate", b"identity")
"""What ``*`` in ``Accept-Encoding`` stands for once only readable codings may be asked for."""
_IDENTITY = (b"accept-encoding", b"identity")
_UNCHANGED = b""

Headers = list[tuple[bytes, bytes]]


def restrict_accept_encoding(headers: Headers, strip: bool) -> Headers:
    """The request ``headers`` to forward: ``Accept-Encoding`` restricted to the codings
    keylimit reads (the client's q-values and ``identity`` kept), or ``identity`` alone
    when ``strip``; ``headers`` itself when nothing changes.

    Without an ``Accept-Encoding`` an app may answer in any coding, but few compress
    unasked; what is unreadable then is charged all the same.
    """
    if strip:
        kept = [h for h in headers if h[0] != b"accept-encoding"]
        if len(kept) == len(headers) - 1 and _IDENTITY in headers:
            return headers
        kept.append(_IDENTITY)
        return kept
    value: bytes | None = None
    for name, v in headers:
        if name == b"accept-encoding":
            value = v if value is None else value + b"," + v
    if value is None:
        return headers
    restricted = _RESTRICTED.get(value)
    if restricted is None:
        restricted = _restricted(value)
        if len(_RESTRICTED) < 256:  # clients send few distinct values: work each out once
            _RESTRICTED[value] = restricted
    if restricted is _UNCHANGED:
        return headers
    return [h for h in headers if h[0] != b"accept-encoding"] + [(b"accept-encoding", restricted)]


_RESTRICTED: dict[bytes, bytes] = {}


def _restricted(value: bytes) -> bytes:
    """``value`` with the codings keylimit cannot read left out and ``*`` spelled out as the
    readable codings not listed; ``_UNCHANGED`` when every coding listed is readable."""
    items = [item.strip() for item in value.split(b",")]
    items = [item for item in items if item]
    listed = {item.partition(b";")[0].strip().lower() for item in items}
    if listed <= READABLE and len(items) > 0:
        return _UNCHANGED
    kept: list[bytes] = []
    for item in items:
        coding, semicolon, params = item.partition(b";")
        coding = coding.strip().lower()
        if coding in READABLE:
            kept.append(item)
        elif coding == b"*":
            kept += [c + semicolon + params for c in _ASKED if c not in listed]
    return b", ".join(kept) or b"identity"
