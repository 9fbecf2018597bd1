"""Reading a request body once, for the rate limiter, and handing on what was read.

What a body is, is decided here: whatever the method and content type, a request that may
carry a body has it read whole (within the size cap and the deadline), and a body sent with
a ``Content-Encoding`` is decoded before anything reads it (gzip, deflate; another coding
is refused with 415, never forwarded uncounted). The app then gets exactly the bytes that
were counted: decoded, without ``Content-Encoding``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from .._errors import BadRequest, RequestTooLarge, UnsupportedEncoding
from .._types import Message, Receive, Scope
from ._deadline import DeadlineExceeded, Deadlines

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
"""Methods whose requests carry a body only when their headers announce one."""


def body_headers(method: str, headers: Sequence[tuple[bytes, bytes]]) -> tuple[bool, bytes | None, bytes | None]:
    """Whether the request may carry a body, its Content-Length and its Content-Encoding, in one pass."""
    length: bytes | None = None
    coding: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = value
        elif name == b"content-encoding":
            coding = value if coding is None else coding + b"," + value
        elif name == b"transfer-encoding":
            chunked = True
    if method in _NO_BODY and not chunked and (length is None or length.strip() in (b"", b"0")):
        return False, length, coding
    return True, length, coding


async def receive_body(receive: Receive, limit: int, deadlines: Deadlines | None) -> bytes | None:
    """The whole body, or None if the client disconnected; ``RequestTooLarge`` past ``limit``
    bytes; ``DeadlineExceeded`` when ``deadlines`` runs out first (a total deadline, not one
    per chunk: a client trickling bytes is bounded too)."""
    task = deadlines.begin() if deadlines is not None else None
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            if not chunks and not message.get("more_body", False):
                return chunk
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except asyncio.CancelledError:
        if task is not None and deadlines is not None and deadlines.expired(task):
            raise DeadlineExceeded from None
        raise
    finally:
        if task is not None and deadlines is not None:
            deadlines.end(task)


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body is larger than the limit of {limit} bytes.")


_DECODERS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,  # zlib-wrapped, as RFC 9110 says; raw deflate is tried too
}


def decode_body(body: bytes, codings: bytes, limit: int) -> bytes:
    """``body`` with its content codings undone, last applied first, at most ``limit`` bytes.

    ``UnsupportedEncoding`` (415) for a coding keylimit cannot read, ``BadRequest`` for
    bytes that are not in their coding, ``RequestTooLarge`` when the decoded body passes
    ``limit`` (decoding stops there: a small compressed body cannot make a large one).
    """
    for coding in reversed([c.strip().lower() for c in codings.split(b",")]):
        if coding in (b"", b"identity"):
            continue
        wbits = _DECODERS.get(coding)
        if wbits is None:
            shown = coding.decode("latin-1")[:32]
            raise UnsupportedEncoding(
                f"Request bodies in the content coding {shown!r} are not accepted; send gzip, deflate or none."
            )
        body = _decompress(body, wbits, limit, coding)
    return body


def _decompress(body: bytes, wbits: int, limit: int, coding: bytes) -> bytes:
    try:
        return _inflate(body, wbits, limit)
    except zlib.error:
        pass
    if coding == b"deflate":  # some clients send raw deflate under this name
        try:
            return _inflate(body, -zlib.MAX_WBITS, limit)
        except zlib.error:
            pass
    raise BadRequest(f"The request body is not valid {coding.decode('latin-1')} data.")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out = b""
    while True:
        decoder = zlib.decompressobj(wbits)
        out += decoder.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            raise too_large(limit)
        if not decoder.eof:
            raise zlib.error("the compressed data ends early")
        data = decoder.unused_data
        if not data:
            return out
        if wbits <= zlib.MAX_WBITS:  # only gzip holds several members, one after another
            raise zlib.error("data after the end of the compressed data")


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then passes through."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def with_body_headers(scope: Scope, length: int) -> Scope:
    """``scope`` for a body handed on as read: its Content-Length (if it has one) set to
    ``length``, and no Content-Encoding (the body is handed on decoded)."""
    value = b"%d" % length
    headers = [(n, value if n == b"content-length" else v) for n, v in scope["headers"] if n != b"content-encoding"]
    return {**scope, "headers": headers}
