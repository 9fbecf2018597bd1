"""A streaming reverse proxy to any HTTP server, as a pure ASGI app (needs ``keylimit[proxy]``).

For inference servers that are not Python (llama.cpp, TGI, a remote vLLM): wrap the proxy in
``protect`` like any other app. Bodies stream both ways as they arrive, SSE included; the
upstream's compressed bodies pass through undecoded. Websockets are not proxied: a websocket
connection is closed before its handshake completes, which the client sees as a 403.
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import anyio

from ._errors import BadRequest, ConfigurationError, HTTPError, error_body
from ._redis import redact_url
from ._responses import send_error
from ._types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_TIMEOUT", "Proxy", "proxy_app"]

logger = logging.getLogger("keylimit.proxy")

DEFAULT_TIMEOUT = 600.0

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer"}
    | {b"transfer-encoding", b"upgrade"}
)
# Replaced by the proxy's own (Host by httpx from the upstream URL, X-Forwarded-* below), or not
# meaningful one hop further (the ASGI server already answered Expect: 100-continue).
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
_PATH_SAFE = "/:@!$&'()*+,;="


class BadGateway(HTTPError):
    status, type, code = 502, "server_error", "bad_gateway"


class GatewayTimeout(HTTPError):
    status, type, code = 504, "server_error", "gateway_timeout"


class _ClientDisconnected(Exception):
    pass


def proxy_app(
    upstream: str,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    client: httpx.AsyncClient | None = None,
    upstream_api_key: str | None = None,
    forward_authorization: bool = False,
) -> Proxy:
    """An ASGI app that forwards every HTTP request to ``upstream`` + path + query."""
    return Proxy(
        upstream,
        timeout=timeout,
        client=client,
        upstream_api_key=upstream_api_key,
        forward_authorization=forward_authorization,
    )


class Proxy:
    """Forwards HTTP requests to ``upstream``; see ``proxy_app``.

    ``timeout`` bounds connecting and the wait for each piece read or written (``None``: wait
    forever), also on a ``client`` passed in; it is not a limit on a whole stream. The client's
    ``Authorization`` header (its keylimit key) is dropped unless ``forward_authorization``; the upstream gets
    ``Bearer upstream_api_key`` instead, or Basic credentials from the upstream URL. Without a
    ``client`` the proxy makes its own on lifespan startup (or at the first request) and closes
    it on lifespan shutdown; mounted where no lifespan reaches it, call ``aclose()`` yourself.
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
        upstream_api_key: str | None = None,
        forward_authorization: bool = False,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ConfigurationError("upstream: the proxy needs httpx: pip install 'keylimit[proxy]'") from exc
        try:
            self.upstream = redact_url(upstream)
            parts = urlsplit(upstream)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            self.upstream, valid = "<unparsable>", False
        if not valid or parts.query or parts.fragment:
            raise ConfigurationError(f"upstream: expected http://host[:port][/path], got {self.upstream!r}")
        self._origin = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
        self._base_path = parts.path.rstrip("/")
        self._authorization: bytes | None = None
        if upstream_api_key is not None:
            if not upstream_api_key or not upstream_api_key.isascii() or not upstream_api_key.isprintable():
                raise ConfigurationError("upstream_api_key: must be non-empty printable ASCII")
            self._authorization = f"Bearer {upstream_api_key}".encode()
        elif parts.username is not None or parts.password is not None:
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._authorization = b"Basic " + base64.b64encode(userinfo.encode())
        self._forward_authorization = forward_authorization and self._authorization is None
        self.timeouts = httpx.Timeout(timeout).as_dict()
        self._client = client
        self._owns_client = client is None

    def __repr__(self) -> str:
        return f"Proxy(upstream={self.upstream!r}, timeout={self.timeouts['read']!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _Exchange(self, scope, receive, send).run()
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "websockets are not proxied"})

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # Cookies belong to the end users, never to one jar shared between them.
            jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            self._client = httpx.AsyncClient(
                cookies=jar,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the proxy's own HTTP client (a client passed in is left to its owner)."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def request_url(self, scope: Scope) -> str:
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"], safe=_PATH_SAFE).encode()
        root_path = quote(scope.get("root_path", ""), safe=_PATH_SAFE).encode()
        if root_path and raw_path.startswith(root_path):
            raw_path = raw_path[len(root_path) :]
        path = "/" + raw_path.decode("latin-1").lstrip("/")
        query: bytes = scope.get("query_string", b"")
        return self._origin + self._base_path + path + (f"?{query.decode('latin-1')}" if query else "")

    def request_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        received = [(name.lower(), value) for name, value in scope["headers"]]
        dropped = _NOT_FORWARDED | _connection_tokens(received)
        if not self._forward_authorization:
            dropped |= {b"authorization"}
        headers = [(name, value) for name, value in received if name not in dropped]
        forwarded_for = b", ".join(value for name, value in received if name == b"x-forwarded-for")
        if scope.get("client"):
            address = str(scope["client"][0]).encode()
            forwarded_for = forwarded_for + b", " + address if forwarded_for else address
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for))
        headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
        host = next((value for name, value in received if name == b"host"), None)
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        if self._authorization is not None:
            headers.append((b"authorization", self._authorization))
        return headers


class _Exchange:
    """One request: stream it up, stream the answer down, stop both when the client leaves."""

    def __init__(self, proxy: Proxy, scope: Scope, receive: Receive, send: Send) -> None:
        self.proxy, self.scope, self.receive, self._send = proxy, scope, receive, send
        self.body_read = anyio.Event()
        self.started = False
        self.length_delimited = False
        self.event_stream = False
        self.tail = b"\n\n"

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.watch_disconnect, tasks.cancel_scope)
            with contextlib.suppress(_ClientDisconnected):
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
                self.proxy.request_url(self.scope),
                headers=self.proxy.request_headers(self.scope),
                content=content,
                extensions={"timeout": self.proxy.timeouts},
            )
            response = await self.proxy.client().send(request, stream=True, follow_redirects=False)
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
                raise _ClientDisconnected
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                self.body_read.set()
                return

    async def relay(self, response: httpx.Response) -> None:
        received = [(name.lower(), value) for name, value in response.headers.raw]
        dropped = HOP_BY_HOP | _connection_tokens(received)
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
            "upstream %s failed %s for %s %s: %s: %s", self.proxy.upstream, when, method, path, type(exc).__name__, exc
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
            raise _ClientDisconnected from exc


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    return frozenset(
        token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")
    )
