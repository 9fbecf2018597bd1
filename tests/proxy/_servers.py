"""A real uvicorn in a background thread, a cross-thread signal, and the stand-in upstream."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import threading

import uvicorn

from keylimit._types import ASGIApp, Receive, Scope, Send

GZIPPED_TEXT = b"compressed hello " * 64
UPSTREAM_DATE = b"Mon, 01 Jan 2001 00:00:00 GMT"
UPSTREAM_SERVER = b"upstream/1.0"


class Signal:
    """A one-shot event set from any thread and awaited from any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._set:
                return
            self._waiters.append((loop, future))
        await future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def observed(signal: Signal) -> bool:
    """Whether ``signal`` is set within 10 s (a guard against a hung test, not a timing claim)."""
    try:
        await asyncio.wait_for(signal.wait(), 10)
    except TimeoutError:
        return False
    return True


class ServerThread:
    """``app`` served by uvicorn on a free loopback port, in a thread with its own event loop."""

    def __init__(self, app: ASGIApp, *, http: str = "auto") -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)  # connections queue here until uvicorn accepts: no start-up wait
        self.netloc = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.url = f"http://{self.netloc}"
        # proxy_headers off: the scope's client is the real peer, not what X-Forwarded-For claims.
        config = uvicorn.Config(
            app,
            http=http,
            lifespan="on",
            loop="asyncio",
            log_level="warning",
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _chunk(send: Send, body: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


class Upstream:
    """A raw ASGI server standing in for llama.cpp or TGI, with signals the tests drive."""

    def __init__(self) -> None:
        self.first_body_chunk = Signal()
        self.sse_gates = {1: Signal(), 2: Signal()}
        self.disconnected = Signal()

    def release(self) -> None:
        for gate in self.sse_gates.values():
            gate.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        route = getattr(self, "route_" + scope["path"].strip("/").replace("-", "_"), self.echo)
        await route(scope, receive, send)

    async def echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message.get("body"):
                self.first_body_chunk.set()
                body += message["body"]
            if not message.get("more_body", False):
                break
        answer = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        await _start(send, 200, [(b"content-type", b"application/json"), (b"x-upstream", b"echo")])
        await _chunk(send, json.dumps(answer).encode(), more=False)

    async def route_teapot(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send, 418, [(b"content-type", b"text/plain"), (b"x-teapot", b"short and stout")])
        await _chunk(send, b"I'm a teapot", more=False)

    async def route_stamped(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The upstream's own Date and Server, beside the ones its ASGI server adds.
        headers = [(b"date", UPSTREAM_DATE), (b"server", UPSTREAM_SERVER), (b"content-length", b"2")]
        await _start(send, 200, headers)
        await _chunk(send, b"ok", more=False)

    async def route_redirect(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send, 302, [(b"location", b"/elsewhere"), (b"content-length", b"0")])
        await _chunk(send, b"", more=False)

    async def route_hop(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"connection", b"x-hop-secret"),
            (b"x-hop-secret", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
            (b"trailer", b"x-checksum"),
            (b"upgrade", b"h2c"),
            (b"x-kept", b"yes"),
            (b"content-length", b"2"),
        ]
        await _start(send, 200, headers)
        await _chunk(send, b"ok", more=False)

    async def route_gzip(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = gzip.compress(GZIPPED_TEXT)
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(body)).encode()),
        ]
        await _start(send, 200, headers)
        await _chunk(send, body, more=False)

    async def route_sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send, 200, [(b"content-type", b"text/event-stream")])
        for number in (1, 2, 3):
            await _chunk(send, f"data: {number}\n\n".encode())
            if number in self.sse_gates:
                await self.sse_gates[number].wait()
        await _chunk(send, b"", more=False)

    async def route_sse_broken(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Returning without finishing the response makes uvicorn drop the connection mid-stream.
        await _start(send, 200, [(b"content-type", b"text/event-stream")])
        await _chunk(send, b"data: 1\n\n")

    async def route_length_broken(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send, 200, [(b"content-type", b"text/plain"), (b"content-length", b"100")])
        await _chunk(send, b"0123456789")

    async def route_stall(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._until_disconnect(receive)

    async def route_forever(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send, 200, [(b"content-type", b"text/event-stream")])
        await _chunk(send, b"data: first\n\n")
        await self._until_disconnect(receive)

    async def route_upload_hold(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._until_disconnect(receive)

    async def _until_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message.get("body"):
                self.first_body_chunk.set()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
