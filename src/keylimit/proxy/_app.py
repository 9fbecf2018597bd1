"""A streaming reverse proxy to any HTTP server, as a pure ASGI app (needs ``keylimit[proxy]``).

For inference servers that are not Python (llama.cpp, TGI, a remote vLLM): wrap the proxy in
``protect`` like any other app. Bodies stream both ways as they arrive, SSE included; the
upstream's compressed bodies pass through undecoded. The upstream's ``Date`` and ``Server``
are dropped: the ASGI server running the proxy sends its own. Websockets are not proxied: a
websocket connection is closed before its handshake completes, which the client sees as a 403.
"""

from __future__ import annotations

import base64
import http.cookiejar
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .._errors import ConfigurationError
from .._types import Receive, Scope, Send
from ..redis._url import redact_url
from ._exchange import HOP_BY_HOP, Exchange, connection_tokens

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_TIMEOUT", "Proxy", "proxy_app"]

DEFAULT_TIMEOUT = 600.0

# Replaced by the proxy's own (Host by httpx from the upstream URL, X-Forwarded-* below), or not
# meaningful one hop further (the ASGI server already answered Expect: 100-continue).
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
_PATH_SAFE = "/:@!$&'()*+,;="


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
        self.timeouts: dict[str, float | None] = httpx.Timeout(timeout).as_dict()
        self._client = client
        self._owns_client = client is None

    def __repr__(self) -> str:
        return f"Proxy(upstream={self.upstream!r}, timeout={self.timeouts['read']!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            exchange = Exchange(
                scope,
                receive,
                send,
                client=self.client(),
                url=self.request_url(scope),
                headers=self.request_headers(scope),
                timeouts=self.timeouts,
                upstream=self.upstream,
            )
            await exchange.run()
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
        dropped = _NOT_FORWARDED | connection_tokens(received)
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
