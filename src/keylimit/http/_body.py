"""Reading a request body once, for the rate limiter, and handing on what was read.

What a body is, is decided here: whatever the method and content type, a request that may
carry a body has it read whole (within the size cap and the deadline), and a body sent with
a ``Content-Encoding`` is decoded before anything reads it (gzip, deflate; another coding
is refused with 415, never forwarded uncounted). The app then gets exactly the bytes that
were counted: decoded, without ``Content-Encoding``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._errors import BadRequest, RequestTooLarge, UnsupportedEncoding
from .._types import Message, Receive, Scope
from ._deadline import DeadlineExceeded, Deadlines
from ._decoders import DecodeError, Decoder, stages

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
"""Methods whose requests carry a body only when their headers announce one."""


def body_headers(
    method: str, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[bool, bytes | None, bytes | None, bytes | None]:
    """In one pass: whether the request may carry a body, its Content-Length, its
    Content-Encoding, and its Accept-Encoding (what the limiter may have to restrict)."""
    length: bytes | None = None
    coding: bytes | None = None
    accept: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = value
        elif name == b"accept-encoding":
            accept = value
        elif name == b"content-encoding":
            coding = value if coding is None else coding + b"," + value
        elif name == b"transfer-encoding":
            chunked = True
    if method in _NO_BODY and not chunked and (length is None or length.strip() in (b"", b"0")):
        return False, length, coding, accept
    return True, length, coding, accept


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


def decode_body(body: bytes, codings: bytes, limit: int) -> bytes:
    """``body`` with its content codings undone (``_decoders``), at most ``limit`` bytes.

    ``UnsupportedEncoding`` (415) for a coding keylimit cannot read, ``BadRequest`` for
    bytes that are not in their coding (corrupt or cut off), ``RequestTooLarge`` when the
    decoded body passes ``limit`` (decoding stops there: a small compressed body cannot
    make a large one).
    """
    kinds = stages(codings)
    if kinds is None:
        shown = codings.decode("latin-1")[:64]
        raise UnsupportedEncoding(
            f"Request bodies in the content coding {shown!r} are not accepted; send gzip, deflate or none."
        )
    decoder = Decoder(kinds)
    pieces: list[bytes] = []
    size = 0
    try:
        for piece in decoder.decode(body):
            size += len(piece)
            if size > limit:
                raise too_large(limit)
            pieces.append(piece)
        valid = decoder.complete
    except DecodeError:
        valid = False
    if not valid:
        raise BadRequest(f"The request body is not valid {codings.decode('latin-1')[:64]} data.")
    return b"".join(pieces)


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
