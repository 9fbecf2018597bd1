"""What every section shares: throwaway Redis servers, the subject apps, an ASGI driver,
keylimit subjects built from a ``Config``, and interleaved timing."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

PATH = "/v1/chat/completions"
BODY = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hello " * 40}]}).encode()
STREAM_BODY = json.dumps(
    {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hello " * 40}]}
).encode()
REPLY = {
    "id": "c1",
    "object": "chat.completion",
    "model": "demo",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52},
}
ACCOUNT = "bench"
HOT_CACHE_TTL = 3600.0
"""In-process subjects keep verified keys cached for the whole run, so that they measure the
hot path; the default (5 s) makes every key re-verify with argon2 every 5 s, which the cold
section prices separately and the HTTP section (defaults) includes."""
UNLIMITED = (1_000_000_000, 1_000_000_000_000, 1_000_000_000_000)
"""The enterprise limits of the bench account: what is measured is the allowed path."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- throwaway redis-server processes -------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self) -> None:
        if not shutil.which("redis-server"):
            raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _servers.append(self)
        deadline = time.monotonic() + 10
        while self.command("PING") != "+PONG":
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise SystemExit(f"redis-server on port {self.port} did not start")
            time.sleep(0.01)

    def command(self, *args: str) -> str:
        """One command over a fresh socket, the reply's raw text ('' if the server is not up)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(payload.encode())
                data = b""
                while not data.endswith(b"\r\n") or _incomplete(data):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                return data.decode().strip()
        except OSError:
            return ""

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section)
        out: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                out[name] = value
        return out

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


def _incomplete(data: bytes) -> bool:
    # A bulk string reply ($N) is complete once N bytes and the final CRLF have arrived.
    if not data.startswith(b"$"):
        return False
    header, _, rest = data.partition(b"\r\n")
    return len(rest) < int(header[1:]) + 2


_servers: list[RedisServer] = []


@atexit.register
def _stop_servers() -> None:
    for server in _servers:
        server.stop()


def tempdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="kl-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# --- subject apps ---------------------------------------------------------------------------


def chat_app(chunks: int = 16) -> ASGIApp:
    """Starlette with a JSON chat completion and, for ``"stream": true``, an SSE stream of
    ``chunks`` events (``sse_events``) that honours ``stream_options.include_usage``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if not body.get("stream"):
            return JSONResponse(REPLY)
        usage = (body.get("stream_options") or {}).get("include_usage") is True
        return StreamingResponse(_send_events(sse_events(chunks, usage)), media_type="text/event-stream")

    app: Any = Starlette(routes=[Route(PATH, chat, methods=["POST"])])
    return app  # type: ignore[no-any-return]


def replaying(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``first`` (the body, read already), then passes through."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return replay


def floor_app() -> ASGIApp:
    """``chat_app`` behind a middleware that does only what any body-reading, header-adding
    middleware must: read the body, replay it, add nine ``X-Ratelimit-*`` headers to the answer."""
    inner = chat_app()
    extra = [  # the nine headers keylimit sends, with values of the same length
        (b"x-ratelimit-limit-requests", b"1000000000"),
        (b"x-ratelimit-limit-prompt-tokens", b"1000000000000"),
        (b"x-ratelimit-limit-completion-tokens", b"1000000000000"),
        (b"x-ratelimit-remaining-requests", b"999999999"),
        (b"x-ratelimit-remaining-prompt-tokens", b"999999999950"),
        (b"x-ratelimit-remaining-completion-tokens", b"999999999998"),
        (b"x-ratelimit-reset", b"1796000000"),
        (b"x-ratelimit-reset-requests", b"41.318s"),
        (b"x-ratelimit-reset-tokens", b"41.318s"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = replaying({"type": "http.request", "body": b"".join(chunks), "more_body": False}, receive)

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await inner(scope, replay, add_headers)

    return app


LEAN_TOKEN = "forii_sk_" + "l" * 44
"""The one key ``lean_app`` knows (of a real key's length; it checks no format)."""


def lean_app(
    authorization: bytes = f"Bearer {LEAN_TOKEN}".encode(), limits: tuple[int, int, int] = UNLIMITED
) -> ASGIApp:
    """The work of the allowed path, and nothing more, in one function: the key looked up
    by its keyed digest, the body parsed and its prompt estimated (keylimit's estimate),
    the sliding window checked and charged, the nine header values built, the response's
    ``usage`` read and settled. No failure handling, no second body chunk, no deadline, no
    metrics, no configuration: a lower bound for any keylimit in Python, not a limiter."""
    import hashlib
    import math

    import orjson

    from keylimit.ratelimit._headers import openai_duration
    from keylimit.ratelimit._tokens import EstimatingTokenCounter

    inner = chat_app()
    count_prompt = EstimatingTokenCounter().count_prompt
    keyed = hashlib.blake2b(key=b"k" * 32, digest_size=16)

    def digest(header: bytes) -> bytes:
        h = keyed.copy()
        h.update(header)
        return h.digest()

    accounts = {digest(authorization): "acct:bench"}
    plan = [
        (n, b"%d" % v)
        for n, v in zip(
            (b"x-ratelimit-limit-requests", b"x-ratelimit-limit-prompt-tokens", b"x-ratelimit-limit-completion-tokens"),
            limits,
            strict=True,
        )
    ]
    states: dict[str, list[float]] = {}
    window = 60.0
    l0, l1, l2 = limits

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
        key = accounts.get(digest(header)) if header is not None else None
        if key is None:
            raise RuntimeError("the lean variant knows one key")
        first = await receive()
        prompt = count_prompt(orjson.loads(first["body"]))
        now = time.time()
        index = math.floor(now / window)
        state = states.get(key)
        if state is None or state[0] != index:
            state = states[key] = [float(index), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        weight = 1.0 - (now - index * window) / window
        u0 = state[4] * weight + state[1]
        u1 = state[5] * weight + state[2]
        u2 = state[6] * weight + state[3]
        if u0 + 1 > l0 or u1 + prompt > l1 or u2 + 1 > l2:
            raise RuntimeError("the lean variant has no refusals")
        state[1] += 1
        state[2] += prompt
        reset_at = (index + 1) * window
        reset = openai_duration(reset_at - now)
        headers = [
            *plan,
            (b"x-ratelimit-remaining-requests", b"%d" % (l0 - u0 - 1)),
            (b"x-ratelimit-remaining-prompt-tokens", b"%d" % (l1 - u1 - prompt)),
            (b"x-ratelimit-remaining-completion-tokens", b"%d" % (l2 - u2)),
            (b"x-ratelimit-reset", b"%d" % math.ceil(reset_at)),
            (b"x-ratelimit-reset-requests", reset),
            (b"x-ratelimit-reset-tokens", reset),
        ]
        usage = None
        replay = replaying(first, receive)

        async def reading(message: Message) -> None:
            nonlocal usage
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            else:
                usage = orjson.loads(message["body"]).get("usage")
            await send(message)

        await inner(scope, replay, reading)
        if usage is not None:
            state[2] += usage["prompt_tokens"] - prompt
            state[3] += usage["completion_tokens"]

    return app


@functools.lru_cache(maxsize=8)
def sse_events(chunks: int, usage: bool) -> tuple[bytes, ...]:
    """A streamed chat completion of ``chunks`` content chunks as vLLM sends it (compact JSON,
    one event a chunk, then ``[DONE]``). When the client asked for ``stream_options.include_usage``
    (``usage``) every chunk carries ``"usage":null`` and a usage-only chunk comes before ``[DONE]``.
    Encoded once, so that the app's own cost per chunk is the same with and without usage."""
    events = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": f"tok{i} "} if i == 0 else {"content": f"tok{i} "}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if i == chunks - 1 else None}
        event: dict[str, Any] = {**_CHUNK, "choices": [choice]}
        if usage:
            event["usage"] = None
        events.append(_sse(event))
    if usage:
        total = {"prompt_tokens": 50, "total_tokens": 50 + chunks, "completion_tokens": chunks}
        events.append(_sse({**_CHUNK, "choices": [], "usage": total}))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


_CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1796000000, "model": "demo"}


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def _send_events(events: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def slowapi_app(storage_uri: str) -> ASGIApp:
    """The issue's slowapi subject: one default limit on the client address, moving window."""
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app: Any = chat_app()
    app.state.limiter = Limiter(
        key_func=get_remote_address,
        default_limits=["100000000/minute"],
        storage_uri=storage_uri,
        headers_enabled=True,
        strategy="moving-window",
    )
    app.add_middleware(SlowAPIASGIMiddleware)
    return app  # type: ignore[no-any-return]


# --- keylimit subjects ----------------------------------------------------------------------


@dataclass
class Subject:
    """An ASGI app with the headers its requests carry, and what closes it."""

    app: ASGIApp
    headers: Headers = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def keylimit_config(keys_db: Path, limits_url: str, **options: Any) -> Any:
    """A ``Config`` with the defaults, but for the stores and ``options``."""
    from keylimit import Config

    return Config(keys_url=f"sqlite:///{keys_db}", limits_url=limits_url, **options)


async def create_key(config: Any, account: str = ACCOUNT, *, unlimited: bool = True) -> str:
    """A key of ``account`` in the config's store (its plan raised unless told otherwise)."""
    from keylimit import KeyManager
    from keylimit.config._build import key_manager

    manager: KeyManager = key_manager(config)
    try:
        _, token = await manager.create_key(account, "bench")
        if unlimited:
            from keylimit import Limits

            await manager.set_plan(account, "enterprise", Limits(*UNLIMITED))
    finally:
        await manager.store.aclose()
    return token


def protect_class() -> Any:
    import keylimit

    protect = getattr(keylimit, "Protect", None)
    if protect is None:  # until the lead exports it
        from keylimit._protect import Protect as protect
    return protect


def auth_class() -> Any:
    import keylimit

    auth = getattr(keylimit, "KeyAuthMiddleware", None)
    if auth is None:
        from keylimit.auth._middleware import KeyAuthMiddleware as auth
    return auth


def bearer(token: str) -> Headers:
    return [(b"authorization", f"Bearer {token}".encode())]


async def protect_subject(limits_url: str, *, keys_db: Path | None = None, chunks: int = 16, **options: Any) -> Subject:
    """``Protect(chat_app(), config)`` with a key on an unlimited account in a temp SQLite file."""
    keys_db = keys_db or tempdir() / "keys.db"
    config = keylimit_config(keys_db, limits_url, **{"cache_ttl": HOT_CACHE_TTL, **options})
    token = await create_key(config)
    protect = protect_class()(chat_app(chunks), config)
    subject = Subject(protect, bearer(token), info={"keys_db": str(keys_db), "limits_url": limits_url})
    await start(subject)
    return subject


async def auth_subject() -> Subject:
    """``KeyAuthMiddleware`` alone, over the same kind of store and config."""
    keys_db = tempdir() / "keys.db"
    config = keylimit_config(keys_db, "memory://")
    token = await create_key(config)
    from keylimit import Hasher

    app = auth_class()(chat_app(), keys=config.keys_url, hasher=Hasher(config.argon2), cache_ttl=HOT_CACHE_TTL)
    subject = Subject(app, bearer(token))
    await start(subject)
    return subject


# --- an ASGI driver -------------------------------------------------------------------------


def scope(headers: Headers, body: bytes = BODY, path: str = PATH) -> Scope:
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
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }


async def request(app: ASGIApp, headers: Headers, body: bytes = BODY) -> int:
    """One request through ``app``; its status."""
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(headers, body), receive, send)
    return status


async def start(subject: Subject) -> None:
    """Run the app's lifespan startup; its shutdown is queued on ``subject.closers``."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stopped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def send(message: Message) -> None:
        kind = message["type"]
        target = started if kind.startswith("lifespan.startup") else stopped
        if not target.done():
            target.set_result(kind)

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task: asyncio.Future[Any] = asyncio.ensure_future(subject.app(lifespan, queue.get, send))
    await queue.put({"type": "lifespan.startup"})
    await asyncio.wait([started, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)

    async def shutdown() -> None:
        if not task.done():
            await queue.put({"type": "lifespan.shutdown"})
            await asyncio.wait([stopped, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    subject.closers.append(shutdown)


async def close(subject: Subject) -> None:
    for closer in reversed(subject.closers):
        await closer()


async def check(subject: Subject, name: str, body: bytes = BODY) -> None:
    status = await request(subject.app, subject.headers, body)
    if status != 200:
        raise SystemExit(f"{name}: the warm-up request answered {status}")


# --- interleaved timing ---------------------------------------------------------------------

Call = Callable[[], Awaitable[Any]]


async def interleaved(calls: dict[str, Call], n: int, rounds: int, warmup: int = 200) -> dict[str, list[float]]:
    """Microseconds per call of each subject, one figure per round; subjects take turns in
    a rotating order each round, so that drift of the machine hits them alike."""
    return (await interleaved_with_cpu(calls, n, rounds, warmup))[0]


async def interleaved_with_cpu(
    calls: dict[str, Call], n: int, rounds: int, warmup: int = 200
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """As ``interleaved``, with this process's CPU time (``time.process_time``) beside the wall
    time. CPU time leaves out waiting (on Redis, on a descheduled vCPU), so it is the steadier
    figure; it does not include the redis-server's own CPU."""
    for call in calls.values():
        for _ in range(warmup):
            await call()
    names = list(calls)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            call = calls[name]
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(n):
                await call()
            t1 = time.perf_counter()
            c1 = time.process_time()
            wall[name].append((t1 - t0) / n * 1e6)
            cpu[name].append((c1 - c0) / n * 1e6)
    return wall, cpu


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def quantile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
