"""Reading a request body once, for the rate limiter, and handing it on to the app."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ._deadline import DeadlineExceeded, Deadlines
from ._errors import RequestTooLarge
from ._types import Message, Receive, Scope
from ._usage import is_json


def body_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bool, bytes | None]:
    """Whether the body is to be read as JSON, and its Content-Length, in one pass."""
    content_type: bytes | None = None
    length: bytes | None = None
    for name, value in headers:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and length is None:
            length = value
    # No content type: servers such as FastAPI read the body as JSON.
    return content_type is None or is_json(content_type), length


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


def with_content_length(scope: Scope, length: int) -> Scope:
    """``scope`` with its Content-Length (if it has one) set to ``length``."""
    value = b"%d" % length
    headers = [(n, value if n == b"content-length" else v) for n, v in scope["headers"]]
    return {**scope, "headers": headers}
