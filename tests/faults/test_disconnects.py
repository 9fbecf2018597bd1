"""A client that goes away at every stage of a request (issue 6, Faults) leaves no task and
no counter behind and is charged for what was sent, on the memory and Redis limit backends.

What is charged, stage by stage:

- **during the request body**: nothing. The request never reached the app and was never
  admitted (keylimit reads a JSON body whole before admission), and nobody is left to
  answer. A client that opens many such requests is a connection-level abuse, bounded
  by the server and ``KEYLIMIT_BODY_TIMEOUT``, not by plan limits.
- **before the response** (the app is working when the client goes, and notices or is
  cancelled): the request and its prompt estimate, as admitted; no completion tokens.
- **mid-stream** (``send`` raises ``OSError`` after some chunks, or ``receive`` says
  ``http.disconnect`` and the app stops): the request, the prompt, and the completion
  text of the chunks the server accepted, counted as when no usage comes. If the
  upstream's ``usage`` passed before the client went, that count is the charge.

Run: ``.venv/bin/pytest -q tests/faults/test_disconnects.py``
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from keylimit import Config, ManualClock, Protect
from keylimit._types import Message, Receive, Scope, Send
from keylimit.auth._hashing import CHEAPEST
from keylimit.config._build import key_manager
from keylimit.ratelimit._tokens import EstimatingTokenCounter

START = 1_700_000_040.0  # a minute boundary plus 10 s: one window throughout
PIECES = ("Once", " upon", " a", " time", " there", " was", " a", " model", ".")
BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "Tell me a story about a model that streams."}],
    "stream": True,
}
COUNTER = EstimatingTokenCounter()
PROMPT = COUNTER.count_prompt(BODY)
USAGE = {"prompt_tokens": PROMPT + 4, "completion_tokens": len(PIECES), "total_tokens": PROMPT + 4 + len(PIECES)}


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


def events() -> list[bytes]:
    return [*(sse(delta(p)) for p in PIECES), sse({"choices": [], "usage": USAGE}), sse(b"[DONE]")]


class Model:
    """Stands in for an inference server; the ``x-stage`` header says how it behaves."""

    def __init__(self) -> None:
        self.reached = 0
        self.working = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached += 1
        while True:  # the body (replayed by keylimit)
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        stage = dict(scope["headers"]).get(b"x-stage")
        self.working.set()
        if stage == b"notices":  # generating, listening for the client meanwhile
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if stage == b"cancelled":  # generating until the server cancels the request
            await asyncio.Event().wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events():
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await asyncio.sleep(0)  # a token at a time: let the loop run between them
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def starlette_stream(request: Request) -> StreamingResponse:
    await request.body()

    async def generate() -> AsyncIterator[bytes]:
        for event in events():
            yield event
            await asyncio.sleep(0)

    # Without spec_version 2.4 in the scope, Starlette streams in a task group with a task
    # that listens for http.disconnect and cancels the stream.
    return StreamingResponse(generate(), media_type="text/event-stream")


class Client:
    """The far end of one request, as the server sees it: a ``receive`` and a ``send``.

    ``body_parts`` are delivered one per ``receive``; with ``leave_in_body`` the client
    goes after that many. With ``leave_after`` it goes after receiving that many response
    body chunks; then ``send`` raises ``OSError`` if ``send_raises``, else keeps accepting
    (as a server's write buffer does) while ``receive`` says ``http.disconnect``.
    """

    def __init__(
        self,
        body_parts: list[bytes],
        *,
        leave_in_body: int | None = None,
        leave_after: int | None = None,
        send_raises: bool = False,
    ) -> None:
        self.parts = body_parts
        self.leave_in_body = leave_in_body
        self.leave_after = leave_after
        self.send_raises = send_raises
        self.gone = asyncio.Event()
        self.messages: list[Message] = []
        self._given = 0

    async def receive(self) -> Message:
        allowed = len(self.parts) if self.leave_in_body is None else self.leave_in_body
        if self._given < allowed:
            self._given += 1
            return {
                "type": "http.request",
                "body": self.parts[self._given - 1],
                "more_body": self._given < len(self.parts),
            }
        if self.leave_in_body is not None:
            self.gone.set()
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set() and self.send_raises:
            raise OSError("the client went away")
        self.messages.append(message)
        chunks = [m for m in self.messages if m["type"] == "http.response.body" and m.get("body")]
        if self.leave_after is not None and len(chunks) >= self.leave_after:
            self.gone.set()

    def text(self) -> str:
        """The completion text the client was sent."""
        body = b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        out = []
        for block in body.decode().split("\n\n"):
            data = block.removeprefix("data: ")
            if data and data != "[DONE]":
                out.extend(c["delta"].get("content", "") for c in json.loads(data)["choices"])
        return "".join(out)


@pytest.fixture(params=["memory", "redis"])
def limits_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def setup(limits_url: str) -> AsyncIterator[tuple[Protect, Model, str]]:
    model = Model()
    streaming = Starlette(routes=[Route("/v1/starlette", starlette_stream, methods=["POST"])])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        target = streaming if scope["path"] == "/v1/starlette" else model
        await target(scope, receive, send)

    config = Config(keys_url="memory://", limits_url=limits_url, argon2=CHEAPEST, clock=ManualClock(START))
    protect = Protect(app, config)
    _, token = await key_manager(config, protect.store).create_key("acct_1", "disconnects")
    try:
        yield protect, model, token
    finally:
        await protect.aclose()


def scope_for(token: str, stage: str = "", path: str = "/v1/chat/completions") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"x-stage", stage.encode()),
        ],
        "client": ("10.0.0.1", 50000),
        "server": ("test", 80),
    }


async def standing(protect: Protect) -> tuple[float, float, float]:
    await protect.limits.flush()
    decision = await protect.limits.peek("acct:acct_1", (60, 100_000, 10_000), protect.config.clock())
    return decision.used


async def settled_tasks(protect: Protect, before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks begun since ``before`` that are still running once the loop has settled."""
    await protect.limits.flush()
    for _ in range(10):
        await asyncio.sleep(0)
    for task in asyncio.all_tasks() - before:
        # The backend's one settlement writer (not one per request) ends once nothing is pending.
        if getattr(task.get_coro(), "__qualname__", "") == "SettlementBatch._run":
            await task
    return {t for t in asyncio.all_tasks() - before if not t.done()}


async def warm_up(protect: Protect, token: str) -> tuple[set[asyncio.Task[Any]], tuple[float, float, float]]:
    """One whole request first, so that per-process background work (the last-use writer)
    has begun; then the tasks and the account's standing to compare with."""
    client = Client([json.dumps(BODY).encode()])
    await protect(scope_for(token), client.receive, client.send)
    assert client.messages[0]["status"] == 200
    return asyncio.all_tasks(), await standing(protect)


def charged(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float, float]:
    return (after[0] - before[0], after[1] - before[1], after[2] - before[2])


async def test_gone_during_the_body_charges_nothing(setup: tuple[Protect, Model, str]) -> None:
    protect, model, token = setup
    tasks, before = await warm_up(protect, token)
    raw = json.dumps(BODY).encode()
    client = Client([raw[:10], raw[10:30], raw[30:]], leave_in_body=2)
    await protect(scope_for(token), client.receive, client.send)
    assert client.messages == []  # nobody to answer
    assert model.reached == 1  # the warm-up only
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (0, 0, 0)


async def test_gone_while_the_app_works_and_it_notices(setup: tuple[Protect, Model, str]) -> None:
    protect, model, token = setup
    tasks, before = await warm_up(protect, token)
    model.working.clear()
    client = Client([json.dumps(BODY).encode()])
    request = asyncio.ensure_future(protect(scope_for(token, "notices"), client.receive, client.send))
    await model.working.wait()
    client.gone.set()
    await request
    assert client.messages == []
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (1, PROMPT, 0)


async def test_gone_while_the_app_works_and_the_server_cancels_it(setup: tuple[Protect, Model, str]) -> None:
    protect, model, token = setup
    tasks, before = await warm_up(protect, token)
    model.working.clear()
    client = Client([json.dumps(BODY).encode()])
    request = asyncio.ensure_future(protect(scope_for(token, "cancelled"), client.receive, client.send))
    await model.working.wait()
    client.gone.set()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert client.messages == []
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (1, PROMPT, 0)


@pytest.mark.parametrize("leave_after", [1, 4])
async def test_gone_mid_stream_send_raises(setup: tuple[Protect, Model, str], leave_after: int) -> None:
    protect, _, token = setup
    tasks, before = await warm_up(protect, token)
    client = Client([json.dumps(BODY).encode()], leave_after=leave_after, send_raises=True)
    with pytest.raises(OSError, match="the client went away"):  # the server's own error, passed on unchanged
        await protect(scope_for(token, "stream"), client.receive, client.send)
    assert client.messages[0]["status"] == 200
    assert client.messages[0]["headers"]  # rate limit headers went out with the start
    text = client.text()
    assert text == "".join(PIECES[:leave_after])
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (1, PROMPT, COUNTER.count_text(text))


async def test_gone_after_the_last_token_is_charged_the_reported_usage(setup: tuple[Protect, Model, str]) -> None:
    # The usage event (asked for by keylimit, so stripped before the client) passed before
    # the client went: the upstream's own count is the charge, the prompt corrected to it.
    protect, _, token = setup
    tasks, before = await warm_up(protect, token)
    client = Client([json.dumps(BODY).encode()], leave_after=len(PIECES), send_raises=True)
    with pytest.raises(OSError, match="the client went away"):
        await protect(scope_for(token, "stream"), client.receive, client.send)
    assert client.text() == "".join(PIECES)
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (1, USAGE["prompt_tokens"], USAGE["completion_tokens"])


@pytest.mark.parametrize("leave_after", [1, 4])
async def test_gone_mid_stream_receive_says_disconnect(setup: tuple[Protect, Model, str], leave_after: int) -> None:
    protect, _, token = setup
    tasks, before = await warm_up(protect, token)
    client = Client([json.dumps(BODY).encode()], leave_after=leave_after)
    await protect(scope_for(token, path="/v1/starlette"), client.receive, client.send)
    text = client.text()
    assert text  # some of the stream went out ...
    assert len(text) < len("".join(PIECES))  # ... and Starlette stopped it when the client went
    assert client.messages[-1].get("more_body", False)  # never finished
    assert await settled_tasks(protect, tasks) == set()
    assert charged(before, await standing(protect)) == (1, PROMPT, COUNTER.count_text(text))
