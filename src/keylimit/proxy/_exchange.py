"""One proxied exchange: the request streamed up, the answer streamed down, both stopped when
the client leaves; and the headers that never cross the proxy.

It is given plain values (a client, the URL, the headers) by ``keylimit.proxy``, which decides
them, and knows nothing of the proxy itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from .._errors import BadRequest, HTTPError, error_body
from .._types import Message, Receive, Scope, Send
from ..http._error_response import send_error

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("keylimit.proxy")

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer"}
    | {b"transfer-encoding", b"upgrade"}
)
# ASGI servers (uvicorn, hypercorn) write their own Date and Server beside the app's: relayed,
# the upstream's would be a second of each. The client is answered by the proxy's server.
_SERVERS_OWN = frozenset({b"date", b"server"})


class BadGateway(HTTPError):
    status, type, code = 502, "server_error", "bad_gateway"


class GatewayTimeout(HTTPError):
    status, type, code = 504, "server_error", "gateway_timeout"


class ClientDisconnected(Exception):
    pass


class Exchange:
    """One request: stream it up, stream the answer down, stop both when the client leaves."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        client: httpx.AsyncClient,
        url: str,
        headers: list[tuple[bytes, bytes]],
        timeouts: dict[str, float | None],
        upstream: str,
    ) -> None:
        """``upstream`` names the upstream in the log (no credentials); ``timeouts`` are httpx's, per request."""
        self.scope, self.receive, self._send = scope, receive, send
        self.client, self.url, self.headers, self.timeouts, self.upstream = client, url, headers, timeouts, upstream
        self.body_read = anyio.Event()
        self.started = False
        self.length_delimited = False
        self.event_stream = False
        self.tail = b"\n\n"

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.watch_disconnect, tasks.cancel_scope)
            with contextlib.suppress(ClientDisconnected):
                await self.forward()
            tasks.cancel_scope.cancel()

    async def watch_disconnect(self, scope: anyio.CancelScope) -> None:
        # Servers report a disconnect through receive(), which the request body owns until read.
        await self.body_read.wait()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return
            if message["type"] == "http.request":
                return  # a middleware replaying the body answers this, not the server: nothing to watch

    async def forward(self) -> None:
        import httpx

        first = await self.receive()
        if first["type"] == "http.disconnect":
            return
        content: bytes | AsyncIterator[bytes] = first.get("body", b"")
        if first.get("more_body", False):
            content = self.body(first.get("body", b""))
        else:
            self.body_read.set()
        response = None
        try:
            request = httpx.Request(
                self.scope["method"],
                self.url,
                headers=self.headers,
                content=content,
                extensions={"timeout": self.timeouts},
            )
            response = await self.client.send(request, stream=True, follow_redirects=False)
            await self.relay(response)
        except httpx.InvalidURL:
            await send_error(self.send, BadRequest("The request URL cannot be forwarded."))
        except httpx.HTTPError as exc:
            await self.upstream_failed(exc)
        finally:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async def body(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                self.body_read.set()
                return

    async def relay(self, response: httpx.Response) -> None:
        received = [(name.lower(), value) for name, value in response.headers.raw]
        dropped = HOP_BY_HOP | _SERVERS_OWN | connection_tokens(received)
        headers = [(name, value) for name, value in received if name not in dropped]
        self.length_delimited = "content-length" in response.headers
        self.event_stream = response.headers.get("content-type", "").startswith("text/event-stream") and (
            "content-encoding" not in response.headers
        )
        await self.send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        self.started = True
        async for chunk in response.aiter_raw():
            if chunk:
                self.tail = (self.tail + chunk)[-4:]
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def upstream_failed(self, exc: httpx.HTTPError) -> None:
        import httpx

        timed_out = isinstance(exc, httpx.TimeoutException)
        when = "mid-stream" if self.started else "before answering"
        method, path = self.scope["method"], self.scope["path"]
        logger.warning(
            "upstream %s failed %s for %s %s: %s: %s", self.upstream, when, method, path, type(exc).__name__, exc
        )
        if not self.started:
            error: HTTPError = (
                GatewayTimeout("The upstream server did not answer in time.")
                if timed_out
                else BadGateway("The upstream server could not be reached or gave an invalid answer.")
            )
            await send_error(self.send, error)
            return
        if self.length_delimited:
            # A body shorter than its Content-Length can only be reported by closing the connection,
            # which the server does when the app returns without finishing the response.
            return
        if self.event_stream and self.tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
            code = "gateway_timeout" if timed_out else "bad_gateway"
            event = error_body("The upstream server broke off the stream.", "server_error", code)
            await self.send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError as exc:  # ASGI 2.4: the client has gone
            raise ClientDisconnected from exc


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    return frozenset(
        token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")
    )
