"""Responses as they pass: never held back, usage read (and taken out again when we asked for it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from keylimit import ManualClock, Plans
from keylimit._types import PRINCIPAL_SCOPE_KEY, Message, Receive, Scope, Send
from keylimit.backends.memory import MemoryBackend
from keylimit.demo import MODEL_ID, demo_model_app
from keylimit.ratelimit._middleware import RateLimitMiddleware
from keylimit.ratelimit._tokens import EstimatingTokenCounter

from ._apps import Recorder, Streamer
from ._asgi import Response, call, principal

COUNTER = EstimatingTokenCounter()
LIMIT = 100  # completion tokens per minute on the test plan


def streaming(app: Any, backend: MemoryBackend, clock: ManualClock, plans: Plans) -> RateLimitMiddleware:
    return RateLimitMiddleware(app, limits=backend, clock=clock, plans=plans)


def ask(stream_options: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}], "stream": True}
    if stream_options is not None:
        body["stream_options"] = stream_options
    return body


async def standing(mw: RateLimitMiddleware) -> Response:
    """Where the account stands: the headers of a GET through the same limits to another app."""
    other = RateLimitMiddleware(Recorder(), limits=mw.backend, clock=mw.clock, plans=mw.plans)
    return await call(other, "GET", "/v1/models", who=principal())


def usage_anywhere(events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, dict) and ("usage" in e or e.get("choices") == [])]


@pytest.mark.parametrize("stream_options", [None, {"include_usage": True}])
async def test_the_first_chunk_reaches_the_client_before_the_app_sends_the_second(
    backend, clock, plans, stream_options
):
    gate = asyncio.Event()
    app = Streamer(gate=gate, gate_after=1)
    seen_when_first_arrived: list[int] = []

    async def client_got(message: Message, response: Response) -> None:
        if not gate.is_set():
            seen_when_first_arrived.append(len(app.sent))
            gate.set()  # only now may the app send its second chunk

    mw = streaming(app, backend, clock, plans)
    r = await asyncio.wait_for(call(mw, body=ask(stream_options), who=principal(), on_send=client_got), 10)
    assert seen_when_first_arrived == [0]  # the app was still holding its first send
    assert r.chunks[0].startswith(b"data: ")
    assert b"Hello" in r.chunks[0]
    assert r.header("x-ratelimit-remaining-requests") == "9"  # headers on streams too


@pytest.mark.parametrize(
    ("split", "newline"),
    [
        (0, b"\n"),  # one event per chunk
        (1, b"\n"),  # one byte per chunk
        (7, b"\n"),  # events cut anywhere
        (0, b"\r\n"),
        (5, b"\r\n"),  # and between \r and \n
    ],
)
async def test_usage_is_asked_for_then_stripped_and_charged(backend, clock, plans, split, newline):
    app = Streamer(split=split, newline=newline, prompt_tokens=11)
    forwarded: list[Scope] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        forwarded.append(scope)
        await app(scope, receive, send)

    mw = streaming(recording, backend, clock, plans)
    r = await call(mw, body=ask(), who=principal())

    [body] = app.bodies
    assert body["stream_options"] == {"include_usage": True}
    [length] = [v for n, v in forwarded[0]["headers"] if n == b"content-length"]
    assert int(length) == len(app.raw_bodies[0])
    events = r.events()
    assert usage_anywhere(events) == []
    assert b"usage" not in r.body
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == list(app.pieces)
    assert events[-1] == "[DONE]"

    after = await standing(mw)
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - len(app.pieces)
    assert after.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - 11  # corrected to usage


async def test_stream_options_of_the_client_are_kept_when_usage_is_added(backend, clock, plans):
    app = Streamer()
    mw = streaming(app, backend, clock, plans)
    r = await call(mw, body=ask({"include_usage": False, "continuous_usage_stats": False}), who=principal())
    assert app.bodies[0]["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert usage_anywhere(r.events()) == []


async def test_a_client_that_asked_for_usage_gets_it_untouched(backend, clock, plans):
    app = Streamer(prompt_tokens=11)
    mw = streaming(app, backend, clock, plans)
    r = await call(mw, body=ask({"include_usage": True}), who=principal())
    assert r.body == b"".join(app.events(include_usage=True))
    assert r.events()[-2]["usage"]["completion_tokens"] == len(app.pieces)
    after = await standing(mw)
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - len(app.pieces)
    assert after.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - 11


class Silent(Streamer):
    """An upstream that ignores ``stream_options`` and never reports usage."""

    def events(self, include_usage: bool) -> list[bytes]:
        return super().events(include_usage=False)


async def test_without_usage_from_upstream_the_text_sent_is_counted(backend, clock, plans):
    app = Silent(pieces=("The quick brown fox", " jumps over", " the lazy dog."))
    mw = streaming(app, backend, clock, plans)
    r = await call(mw, body=ask(), who=principal())
    assert r.body == b"".join(app.events(False))
    after = await standing(mw)
    sent = COUNTER.count_text("".join(app.pieces))
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - sent


PIECES = ("alpha beta gamma delta epsilon " * 2, "zeta eta theta iota kappa " * 2, "lambda mu nu xi omicron " * 4)


async def test_a_client_that_disconnects_mid_stream_is_charged_for_what_was_sent(backend, clock, plans):
    app = Streamer(pieces=PIECES)

    async def drop_after_two(message: Message, response: Response) -> None:
        if len(response.chunks) == 2:
            raise OSError("client went away")

    mw = streaming(app, backend, clock, plans)
    with pytest.raises(OSError, match="client went away"):
        await call(mw, body=ask(), who=principal(), on_send=drop_after_two)
    after = await standing(mw)
    sent = COUNTER.count_text(PIECES[0] + PIECES[1])
    assert sent < COUNTER.count_text("".join(PIECES))
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - sent


async def test_a_cancelled_stream_is_charged_for_what_was_sent(backend, clock, plans):
    gate = asyncio.Event()  # never set: the app hangs after two chunks until cancelled
    app = Streamer(pieces=PIECES, gate=gate, gate_after=2)
    two_sent = asyncio.Event()

    async def client_got(message: Message, response: Response) -> None:
        if len(response.chunks) == 1:
            two_sent.set()

    mw = streaming(app, backend, clock, plans)
    task = asyncio.create_task(call(mw, body=ask(), who=principal(), on_send=client_got))
    await asyncio.wait_for(two_sent.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await mw.backend.flush()
    after = await standing(mw)
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - COUNTER.count_text(
        PIECES[0] + PIECES[1]
    )


async def test_an_error_after_the_stream_started_is_left_to_the_server(backend, clock, plans):
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        data = json.dumps({"choices": [{"index": 0, "delta": {"content": PIECES[0]}}]}).encode()
        await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
        raise RuntimeError("model crashed")

    mw = streaming(failing, backend, clock, plans)
    with pytest.raises(RuntimeError, match="model crashed"):
        await call(mw, body=ask(), who=principal())
    after = await standing(mw)
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - COUNTER.count_text(PIECES[0])


async def test_openai_sdk_stream_through_the_demo_model(backend, clock, plans):
    """The official SDK streams from the demo model: no usage reaches it, and what it used is charged."""
    big = Plans({"free": plans.get("pro")})  # type: ignore[dict-item]
    limited = RateLimitMiddleware(
        Starlette(routes=[Mount("/v1", demo_model_app())]), limits=backend, clock=clock, plans=big
    )

    async def signed_in(scope: Scope, receive: Receive, send: Send) -> None:
        scope[PRINCIPAL_SCOPE_KEY] = principal()
        await limited(scope, receive, send)

    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(signed_in), base_url="http://t/v1")
    async with openai.AsyncOpenAI(api_key="x", base_url="http://t/v1", http_client=http_client, max_retries=0) as sdk:
        messages: Any = [{"role": "user", "content": "Tell me about rate limits."}]
        raw = await sdk.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=messages, max_tokens=12, stream=True
        )
        assert int(raw.headers["x-ratelimit-remaining-requests"]) == 5_999
        chunks = [c async for c in raw.parse()]
        assert chunks
        assert all(c.usage is None for c in chunks)
        plain = await sdk.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=12)
    assert plain.usage is not None
    after = await call(limited, "GET", "/v1/models", who=principal())
    used = 1_000_000 - after.int_header("x-ratelimit-remaining-completion-tokens")
    assert used == 2 * plain.usage.completion_tokens


@pytest.mark.parametrize(("content_type", "length_kept"), [(b"application/json", True), (b"text/event-stream", False)])
async def test_content_length_is_dropped_only_when_usage_is_stripped_from_the_body(
    backend, clock, plans, content_type, length_kept
):
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    if content_type == b"application/json":
        body = json.dumps({"error": {"message": "bad model", "type": "invalid_request_error"}}).encode()
    else:
        body = b"".join(Streamer().events(include_usage=True))
        body = body.replace(b'"usage": null', b'"usage": ' + json.dumps(usage).encode(), 1)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    r = await call(streaming(app, backend, clock, plans), body=ask(), who=principal())
    assert (r.header("content-length") == str(len(body))) is length_kept
    if length_kept:
        assert r.body == body
    else:
        assert usage_anywhere(r.events()) == []


async def test_a_starlette_stream_stopped_by_a_disconnect_is_charged_for_what_was_sent(backend, clock, plans):
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    never = asyncio.Event()

    async def endpoint(request: Request) -> StreamingResponse:
        await request.json()

        async def events():
            for piece in PIECES[:2]:
                data = json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}).encode()
                yield b"data: " + data + b"\n\n"
            await never.wait()  # the model stalls; the client gives up
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])
    mw = streaming(app, backend, clock, plans)
    body = json.dumps(ask()).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    two_sent = asyncio.Event()
    received: list[bytes] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await two_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if len(received) == 2:
                two_sent.set()

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        "query_string": b"",
        "client": ("10.0.0.1", 1),
        "root_path": "",
        "scheme": "http",
        "server": ("t", 80),
        PRINCIPAL_SCOPE_KEY: principal(),
    }
    await asyncio.wait_for(mw(scope, receive, send), 10)
    assert len(received) == 2
    after = await standing(mw)
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == LIMIT - COUNTER.count_text(
        PIECES[0] + PIECES[1]
    )
