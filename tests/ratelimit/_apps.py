"""Small ASGI apps standing in for an inference server, recording what reached them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from keylimit._types import Message, Receive, Scope, Send


@dataclass
class Recorder:
    """An app that answers every request with one fixed response and records each request."""

    status: int = 200
    reply: Any = None
    content_type: bytes = b"application/json"
    bodies: list[bytes] = field(default_factory=list)
    scopes: list[Scope] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        payload = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply or {}).encode()
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [(b"content-type", self.content_type)]}
        )
        await send({"type": "http.response.body", "body": payload})

    @property
    def calls(self) -> int:
        return len(self.bodies)


def chat_reply(content: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage is not None:
        reply["usage"] = usage
    return reply


def chunk(content: str | None = None, *, usage: Any = ..., choices: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    out["choices"] = choices if choices is not None else [{"index": 0, "delta": {"content": content}}]
    if usage is not ...:
        out["usage"] = usage
    return out


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


@dataclass
class Streamer:
    """An OpenAI-style streaming server: one chunk per piece, usage as OpenAI sends it when asked.

    ``gate``: sent after chunk ``gate_after``, the app waits for this event before going on.
    ``split``: send every event in pieces of this many bytes (events cut anywhere).
    """

    pieces: tuple[str, ...] = ("Hello", " there", ", friend")
    prompt_tokens: int = 11
    gate: asyncio.Event | None = None
    gate_after: int = 1
    split: int = 0
    newline: bytes = b"\n"
    bodies: list[Any] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    def events(self, include_usage: bool) -> list[bytes]:
        usage_field: Any = None if include_usage else ...
        out = [sse(chunk(p, usage=usage_field)) for p in self.pieces]
        if include_usage:
            usage = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(self.pieces),
                "total_tokens": self.prompt_tokens + len(self.pieces),
            }
            out.append(sse(chunk(choices=[], usage=usage)))
        out.append(sse(b"[DONE]"))
        return [e.replace(b"\n", self.newline) for e in out]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        self.raw_bodies.append(message["body"])
        body = json.loads(message["body"])
        self.bodies.append(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        data = self.events(include_usage)
        if self.split:
            joined = b"".join(data)
            data = [joined[i : i + self.split] for i in range(0, len(joined), self.split)]
        for i, part in enumerate(data):
            if self.gate is not None and i == self.gate_after:
                await self.gate.wait()
            await send({"type": "http.response.body", "body": part, "more_body": True})
            self.sent.append(part)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
