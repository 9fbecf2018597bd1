"""Sending a documented error as raw ASGI messages (cheaper than building a Response)."""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import HTTPError
from .._types import Send


async def send_error(send: Send, error: HTTPError, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *error.headers(),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def close_websocket(send: Send, error: HTTPError) -> None:
    # 1008: policy violation. Close before accept refuses the handshake with a 403.
    await send({"type": "websocket.close", "code": 1008, "reason": error.code})
