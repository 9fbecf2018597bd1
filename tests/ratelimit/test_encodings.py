"""Compressed responses: charged their uncompressed usage, delivered to the client as the app
meant them; what keylimit cannot read is asked for no more, and charged when it comes anyway."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from keylimit import Limits, ManualClock, Plans
from keylimit._types import Message, Receive, Scope, Send
from keylimit.backends.memory import MemoryBackend
from keylimit.http._encodings import restrict_accept_encoding
from keylimit.http._reading import tap_for
from keylimit.ratelimit._middleware import RateLimitMiddleware

from ._apps import chat_reply, chunk, sse
from ._asgi import Response, call, http_scope, principal

LIMITS = Limits(1_000, 1_000_000, 100_000)
PROMPT, COMPLETION = 12, 900
USAGE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}
PIECES = [f"word{i} " for i in range(40)]


def chat(stream: bool | None, include_usage: bool = False, max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Write a long story"}]}
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def json_body() -> bytes:
    return json.dumps(chat_reply("".join(PIECES), USAGE)).encode()


def sse_events(include_usage: bool) -> list[bytes]:
    out = [sse(chunk(p, usage=None if include_usage else ...)) for p in PIECES]
    if include_usage:
        out.append(sse(chunk(choices=[], usage=USAGE)))
    return [*out, sse(b"[DONE]")]


def stripped_events() -> list[Any]:
    return [json.loads(e[6:]) if e != sse(b"[DONE]") else "[DONE]" for e in sse_events(False)]


def parse_events(body: bytes) -> list[Any]:
    out: list[Any] = []
    for block in body.decode().split("\n\n"):
        data = "\n".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
        if data:
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# --- encoders, as servers write them


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def multi_member_gzip(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


CODINGS: dict[str, tuple[list[bytes], Callable[[bytes], bytes]]] = {
    "gzip": ([b"gzip"], gzip.compress),
    "x-gzip": ([b"x-gzip"], gzip.compress),
    "deflate": ([b"deflate"], zlib.compress),
    "raw deflate": ([b"deflate"], raw_deflate),
    "multi-member gzip": ([b"gzip"], multi_member_gzip),
    "deflate, then gzip": ([b"deflate, gzip"], lambda d: gzip.compress(zlib.compress(d))),
    "two headers": ([b"deflate", b"GZip"], lambda d: gzip.compress(zlib.compress(d))),
    "identity listed": ([b"identity, gzip"], gzip.compress),
}


def decode(body: bytes, coding: str | None) -> bytes:
    """What a client does with the body (the codings are undone last first)."""
    for name in reversed([c.strip().lower() for c in (coding or "").split(",") if c.strip()]):
        if name in ("gzip", "x-gzip"):
            out, rest = b"", body
            while rest:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += d.decompress(rest)
                rest = d.unused_data
            body = out
        elif name == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif name != "identity":
            raise AssertionError(f"the client cannot read {name}")
    return body


def content_encoding(r: Response) -> str | None:
    values = [v.decode() for n, v in r.headers if n == b"content-encoding"]
    return ", ".join(values) if values else None


# --- the apps


async def completions(request: Request) -> StarletteResponse:
    body = await request.json()
    request.app.state.accepted.append(request.headers.get("accept-encoding"))
    if body.get("stream"):
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(iter(sse_events(include)), media_type="text/event-stream")
    return JSONResponse(chat_reply("".join(PIECES), USAGE))


def starlette_app() -> Starlette:
    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    app.state.accepted = []
    return app


@dataclass
class Forced:
    """A server that compresses with one coding whatever the request accepts, in pieces of ``split`` bytes."""

    headers: list[bytes]
    encode: Callable[[bytes], bytes]
    split: int = 97
    corrupt: bool = False
    accepted: list[str | None] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads((await receive())["body"])
        self.accepted.append(dict(scope["headers"]).get(b"accept-encoding", b"").decode() or None)
        stream = bool(body.get("stream"))
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        identity = b"".join(sse_events(include)) if stream else json_body()
        encoded = self.encode(identity)
        if self.corrupt:
            middle = len(encoded) // 2
            encoded = encoded[:middle] + bytes(b ^ 0x55 for b in encoded[middle : middle + 16]) + encoded[middle + 16 :]
        content_type = b"text/event-stream" if stream else b"application/json"
        headers = [(b"content-type", content_type), (b"content-length", str(len(encoded)).encode())]
        headers += [(b"content-encoding", h) for h in self.headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(0, len(encoded), self.split):
            self.sent.append(encoded[i : i + self.split])
            await send({"type": "http.response.body", "body": self.sent[-1], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def limited(app: Any) -> RateLimitMiddleware:
    return RateLimitMiddleware(
        app, limits=MemoryBackend(60.0), clock=ManualClock(1_700_000_040.0), plans=Plans({"free": LIMITS})
    )


async def charged(mw: RateLimitMiddleware) -> tuple[int, int]:
    """Prompt and completion tokens charged so far, from the headers of a request that carries none."""
    other = RateLimitMiddleware(starlette_app(), limits=mw.backend, clock=mw.clock, plans=mw.plans)
    r = await call(other, "GET", "/v1/models", who=principal())
    prompt = LIMITS.prompt_tokens - r.int_header("x-ratelimit-remaining-prompt-tokens")
    return prompt, LIMITS.completion_tokens - r.int_header("x-ratelimit-remaining-completion-tokens")


async def post(mw: RateLimitMiddleware, body: dict[str, Any], accept: str | None) -> Response:
    """One request, as a server drives it: the client stays connected until the response ends."""
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if accept is not None:
        headers.append((b"accept-encoding", accept.encode()))
    incoming = [{"type": "http.request", "body": raw, "more_body": False}]
    response = Response()

    async def receive() -> Message:
        if incoming:
            return incoming.pop()
        await asyncio.Event().wait()  # connected until the app is done (then cancelled)
        raise AssertionError

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            response.chunks.append(message.get("body", b""))

    await mw(http_scope(headers=headers, who=principal()), receive, send)
    return response


# --- Starlette's GZipMiddleware inside the limits


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "gzip;q=0", "br", "deflate", None])
async def test_a_gzipped_json_answer_is_charged_its_usage(accept: str | None) -> None:
    app = starlette_app()
    mw = limited(GZipMiddleware(app, minimum_size=0))
    r = await post(mw, chat(stream=False), accept)
    assert r.status == 200
    if accept is not None and "gzip" in accept:  # Starlette's test, q=0 included
        assert content_encoding(r) == "gzip"
    assert json.loads(decode(r.body, content_encoding(r))) == json.loads(json_body())
    assert await charged(mw) == (PROMPT, COMPLETION)


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "gzip;q=0", "br", None])
async def test_a_gzipped_stream_that_asked_for_usage_is_charged_it_and_reaches_the_client_whole(
    accept: str | None,
) -> None:
    app = starlette_app()
    mw = limited(GZipMiddleware(app, minimum_size=0, exclude_content_types=()))
    r = await post(mw, chat(stream=True, include_usage=True), accept)
    assert r.status == 200
    if accept is not None and "gzip" in accept:
        assert content_encoding(r) == "gzip"
    assert decode(r.body, content_encoding(r)) == b"".join(sse_events(True))
    assert await charged(mw) == (PROMPT, COMPLETION)


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "deflate", None])
async def test_a_stream_whose_usage_keylimit_strips_is_asked_for_uncompressed(accept: str | None) -> None:
    app = starlette_app()
    mw = limited(GZipMiddleware(app, minimum_size=0, exclude_content_types=()))
    r = await post(mw, chat(stream=True), accept)
    assert app.state.accepted == ["identity"]
    assert content_encoding(r) is None
    assert parse_events(r.body) == stripped_events()
    assert await charged(mw) == (PROMPT, COMPLETION)


@pytest.mark.parametrize(
    ("accept", "forwarded"),
    [
        ("gzip, deflate, br, zstd", "gzip, deflate"),
        ("br;q=1.0, gzip;q=0.8, zstd;q=0.5, *;q=0.1", "gzip;q=0.8, deflate;q=0.1, identity;q=0.1"),
        ("br", "identity"),
        ("br, identity;q=0.5", "identity;q=0.5"),
        ("*", "gzip, deflate, identity"),
        ("gzip;q=0, *", "gzip;q=0, deflate, identity"),
        ("identity", "identity"),
        ("", "identity"),
    ],
)
async def test_the_app_is_asked_only_for_encodings_keylimit_reads(accept: str, forwarded: str) -> None:
    app = Forced([b"gzip"], gzip.compress)
    mw = limited(app)
    await post(mw, chat(stream=False), accept)
    await post(mw, chat(stream=True, include_usage=True), accept)
    await post(mw, chat(stream=True), accept)
    assert app.accepted == [forwarded, forwarded, "identity"]


def test_accept_encoding_is_left_alone_when_everything_listed_is_readable() -> None:
    headers = [(b"host", b"x"), (b"accept-encoding", b"gzip, deflate"), (b"content-type", b"application/json")]
    assert restrict_accept_encoding(headers, strip=False) is headers
    assert restrict_accept_encoding(headers, strip=True) == [
        (b"host", b"x"),
        (b"content-type", b"application/json"),
        (b"accept-encoding", b"identity"),
    ]


# --- servers that compress whatever the request says


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("kind", ["json", "stream with usage"])
async def test_every_readable_coding_is_charged_its_usage_and_passed_on_byte_for_byte(coding: str, kind: str) -> None:
    headers, encode = CODINGS[coding]
    app = Forced(headers, encode)
    mw = limited(app)
    r = await post(mw, chat(stream=kind != "json", include_usage=True), "gzip, deflate")
    assert r.status == 200
    assert r.body == b"".join(app.sent)
    assert [v for n, v in r.headers if n == b"content-encoding"] == headers
    assert r.header("content-length") == str(len(r.body))
    assert await charged(mw) == (PROMPT, COMPLETION)


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_compressed_stream_sent_anyway_is_decoded_to_strip_the_usage(coding: str) -> None:
    headers, encode = CODINGS[coding]
    app = Forced(headers, encode)
    mw = limited(app)
    r = await post(mw, chat(stream=True), "gzip")
    assert app.accepted == ["identity"]
    assert content_encoding(r) is None
    assert r.header("content-length") is None
    assert parse_events(r.body) == stripped_events()
    assert await charged(mw) == (PROMPT, COMPLETION)


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize(("max_tokens", "expected"), [(2_000, 2_000), (None, "compressed bytes")])
async def test_an_unreadable_coding_is_charged_not_free(
    strip: bool,
    max_tokens: int | None,
    expected: int | str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Forced([b"br"], zlib.compress)  # opaque to keylimit, whatever the bytes are
    mw = limited(app)
    monkeypatch.setattr("keylimit.http._reading._WARNED", set())
    caplog.set_level(logging.WARNING, logger="keylimit.limits")
    for _ in range(2):
        app.sent.clear()
        r = await post(mw, chat(stream=True, include_usage=not strip, max_tokens=max_tokens), "br")
        assert r.status == 200
        assert r.body == b"".join(app.sent)  # passed on untouched, stripped or not
        assert content_encoding(r) == "br"
    size = len(b"".join(app.sent))
    prompt, completion = await charged(mw)
    assert completion == 2 * (expected if isinstance(expected, int) else size)
    assert prompt > 0  # the estimate stands: no usage was read
    assert len([r for r in caplog.records if "br" in r.getMessage()]) == 1


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("kind", ["json", "stream"])
async def test_a_corrupt_compressed_body_is_never_an_error(strip: bool, kind: str) -> None:
    app = Forced([b"gzip"], gzip.compress, corrupt=True)
    mw = limited(app)
    r = await post(mw, chat(stream=kind == "stream", include_usage=not strip), "gzip")
    assert r.status == 200
    if not (strip and kind == "stream"):
        assert r.body == b"".join(app.sent)
    prompt, completion = await charged(mw)
    assert prompt > 0
    assert 0 <= completion <= COMPLETION


@pytest.mark.parametrize("kind", ["json", "stream"])
async def test_a_decompression_bomb_is_read_in_bounded_memory(kind: str) -> None:
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(c.compress(zeros) for _ in range(256)) + c.flush()  # 256 MiB of zeros
    app = Forced([b"gzip"], lambda _: bomb, split=64 * 1024)
    mw = limited(app)
    tracemalloc.start()
    try:
        r = await post(mw, chat(stream=kind == "stream", include_usage=True), "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status == 200
    assert r.body == bomb
    assert peak < 32 * 1024 * 1024


# --- generated: random usage, random chunk boundaries


@dataclass(frozen=True)
class Case:
    coding: str
    stream: bool
    usage: dict[str, int]
    cuts: list[int]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    usage = {
        "prompt_tokens": draw(st.integers(0, 10**9)),
        "completion_tokens": draw(st.integers(0, 10**9)),
    }
    cuts = draw(st.lists(st.integers(0, 4_000), max_size=12))
    return Case(draw(st.sampled_from(sorted(CODINGS))), draw(st.booleans()), usage, sorted(cuts))


def identity_body(case: Case) -> bytes:
    if not case.stream:
        return json.dumps(chat_reply("".join(PIECES[:7]), case.usage)).encode()
    events = [sse(chunk(p, usage=None)) for p in PIECES[:7]]
    return b"".join([*events, sse(chunk(choices=[], usage=case.usage)), sse(b"[DONE]")])


@settings(max_examples=300, deadline=None)
@given(cases(), st.booleans())
def test_any_cut_of_a_compressed_body_is_charged_its_usage(case: Case, strip: bool) -> None:
    headers, encode = CODINGS[case.coding]
    encoded = encode(identity_body(case))
    cuts = [c for c in case.cuts if c < len(encoded)]
    pieces = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
    content_type = b"text/event-stream" if case.stream else b"application/json"
    tap = tap_for(content_type, b", ".join(headers), strip and case.stream)
    assert tap is not None
    out = []
    for i, piece in enumerate(pieces):
        out.append(tap.feed(piece, i < len(pieces) - 1))
        tap.commit()
    assert tap.usage is not None
    assert (tap.usage["prompt_tokens"], tap.usage["completion_tokens"]) == (
        case.usage["prompt_tokens"],
        case.usage["completion_tokens"],
    )
    if strip and case.stream:
        assert tap.decodes
        events = parse_events(b"".join(out))
        assert events[-1] == "[DONE]"
        assert all("usage" not in e and e["choices"] for e in events[:-1])
        assert len(events) == 8
    else:
        assert b"".join(out) == encoded


@settings(max_examples=60, deadline=None)
@given(cases(), st.booleans())
def test_any_cut_of_a_compressed_answer_is_charged_its_usage_through_the_middleware(case: Case, asks: bool) -> None:
    usage = {
        "prompt_tokens": case.usage["prompt_tokens"] % 100_000,
        "completion_tokens": case.usage["completion_tokens"] % 50_000,
    }
    bounded = Case(case.coding, case.stream, usage, case.cuts)
    headers, encode = CODINGS[case.coding]
    encoded = encode(identity_body(bounded))
    cuts = [c for c in case.cuts if c < len(encoded)]
    pieces = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        content_type = b"text/event-stream" if case.stream else b"application/json"
        start = [(b"content-type", content_type), (b"content-encoding", b", ".join(headers))]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def run() -> tuple[Response, tuple[int, int]]:
        mw = limited(app)
        r = await post(mw, chat(stream=case.stream, include_usage=asks), "gzip, deflate")
        return r, await charged(mw)

    r, spent = asyncio.run(run())
    assert r.status == 200
    assert spent == (usage["prompt_tokens"], usage["completion_tokens"])
    if case.stream and not asks:
        events = parse_events(r.body)
        assert content_encoding(r) is None
        assert all("usage" not in e for e in events[:-1])
    else:
        assert r.body == encoded
