"""Driving a bare ASGI app by hand: a request in, every message out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from keylimit import KeyType, Limits, Principal, Scope
from keylimit._types import PRINCIPAL_SCOPE_KEY, ASGIApp, Message

START = 1_700_000_040.0  # a minute boundary


def principal(account: str = "acme", plan: str = "free", limits: Limits | None = None, key: str = "key_a") -> Principal:
    return Principal(
        key_id=key, account_id=account, key_type=KeyType.SDK, scopes=frozenset({Scope.FULL}), plan=plan, limits=limits
    )


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        found = [v.decode() for n, v in self.headers if n == name.lower().encode()]
        assert len(found) <= 1, f"{name} appears {len(found)} times"
        return found[0] if found else None

    def int_header(self, name: str) -> int:
        value = self.header(name)
        assert value is not None, f"no {name}"
        return int(value)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Any]:
        """The ``data:`` payloads of an SSE body, JSON-decoded ("[DONE]" kept as a string)."""
        out: list[Any] = []
        for block in self.body.decode().split("\n\n"):
            data = "\n".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
            if data:
                out.append(data if data == "[DONE]" else json.loads(data))
        return out


def http_scope(
    method: str = "POST",
    path: str = "/v1/chat/completions",
    *,
    who: Principal | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    client: tuple[str, int] | None = ("10.0.0.1", 50000),
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": client,
        "server": ("test", 80),
    }
    if who is not None:
        scope[PRINCIPAL_SCOPE_KEY] = who
    return scope


def body_messages(body: bytes | None, chunks: list[bytes] | None = None) -> list[Message]:
    if chunks is not None:
        return [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    return [{"type": "http.request", "body": body or b"", "more_body": False}]


async def call(
    app: ASGIApp,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    body: bytes | dict[str, Any] | None = None,
    *,
    who: Principal | None = None,
    headers: Iterable[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
    client: tuple[str, int] | None = ("10.0.0.1", 50000),
    on_send: Callable[[Message, Response], Awaitable[None]] | None = None,
) -> Response:
    """Run one request through ``app``; JSON bodies get their Content-Type and Content-Length."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    if headers is None:
        headers = [(b"content-type", b"application/json")]
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
    incoming = body_messages(body, chunks)
    response = Response()

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            if on_send is not None:
                await on_send(message, response)
            response.chunks.append(message.get("body", b""))

    await app(http_scope(method, path, who=who, headers=headers, client=client), receive, send)
    return response
