from __future__ import annotations

import gzip
import hashlib
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from keylimit import ConfigurationError
from keylimit._types import ASGIApp, Message
from keylimit.proxy import Proxy, proxy_app
from tests.proxy._servers import GZIPPED_TEXT, ServerThread, Upstream, observed

Serve = Callable[[ASGIApp], ServerThread]


def client() -> httpx.AsyncClient:
    # The read timeout only stops a broken proxy from hanging the test.
    return httpx.AsyncClient(timeout=10)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


# --- pass-through ------------------------------------------------------------------------


async def test_status_headers_and_body_pass_through(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http:
        response = await http.get(proxy.url + "/teapot")
    assert response.status_code == 418
    assert response.headers["x-teapot"] == "short and stout"
    assert response.text == "I'm a teapot"


async def test_redirects_are_passed_on_not_followed(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http:
        response = await http.get(proxy.url + "/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/elsewhere"


@pytest.mark.parametrize(
    ("base", "request_target", "raw_path", "query_string"),
    [
        # query strings arrive byte for byte, repeated keys and escapes included
        ("", "/v1/models?a=1&b=two%20words&a=3&flag", "/v1/models", "a=1&b=two%20words&a=3&flag"),
        ("", "/v1/models", "/v1/models", ""),
        # an escaped slash stays escaped
        ("", "/files/a%2Fb", "/files/a%2Fb", ""),
        # a path on the upstream URL prefixes every request
        ("/base", "/v1/chat?x=1", "/base/v1/chat", "x=1"),
        ("/base/", "/v1/chat", "/base/v1/chat", ""),
    ],
)
async def test_path_and_query_preserved(
    upstream_url: str, serve: Serve, base: str, request_target: str, raw_path: str, query_string: str
) -> None:
    proxy = serve(proxy_app(upstream_url + base))
    async with client() as http:
        echo = (await http.get(proxy.url + request_target)).json()
    assert echo["raw_path"] == raw_path
    assert echo["query_string"] == query_string


async def test_post_body_arrives_intact(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "héllo"}]}).encode()
    async with client() as http:
        echo = (await http.post(proxy.url + "/v1/chat/completions", content=body)).json()
    assert echo["method"] == "POST"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header(echo, "content-length") == [str(len(body))]


async def test_large_chunked_body_streams_to_the_upstream_as_it_arrives(
    upstream: Upstream, upstream_url: str, serve: Serve
) -> None:
    proxy = serve(proxy_app(upstream_url))
    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield piece
        # The rest is only sent once the upstream has the first piece: a buffering proxy never would.
        assert await observed(upstream.first_body_chunk)
        for _ in range(127):
            yield piece
        sent = 128 * len(piece)

    for _ in range(128):
        digest.update(piece)
    async with client() as http:
        echo = (await http.post(proxy.url + "/upload", content=body())).json()
    assert echo["body_length"] == sent == 8 * 1024 * 1024
    assert echo["body_sha256"] == digest.hexdigest()


async def test_sse_events_arrive_one_by_one(upstream: Upstream, upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    events: list[str] = []
    async with client() as http, http.stream("GET", proxy.url + "/sse") as response:
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line)
                # The upstream sends event n+1 only after this: each event must get here on its own.
                upstream.sse_gates.get(int(line.removeprefix("data: ")), upstream.sse_gates[1]).set()
    assert events == ["data: 1", "data: 2", "data: 3"]


async def test_compressed_body_passes_through_undecoded(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    compressed = gzip.compress(GZIPPED_TEXT)
    async with client() as http, http.stream("GET", proxy.url + "/gzip") as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(compressed))
    assert gzip.decompress(raw) == GZIPPED_TEXT


# --- headers -----------------------------------------------------------------------------


async def test_request_hop_by_hop_headers_dropped_and_forwarding_headers_added(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    headers = {
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "203.0.113.7",
        "X-Kept": "yes",
    }
    async with client() as http:
        echo = (await http.get(proxy.url + "/echo", headers=headers)).json()
    names = {name for name, _ in echo["headers"]}
    assert names.isdisjoint({"connection", "x-drop-me", "keep-alive", "te", "proxy-authorization"})
    assert header(echo, "x-kept") == ["yes"]
    assert header(echo, "host") == [upstream_url.removeprefix("http://")]
    assert header(echo, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert header(echo, "x-forwarded-proto") == ["http"]
    assert header(echo, "x-forwarded-host") == [proxy.netloc]


async def test_response_hop_by_hop_headers_dropped(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http:
        response = await http.get(proxy.url + "/hop")
    assert response.text == "ok"
    assert response.headers["x-kept"] == "yes"
    for name in ("x-hop-secret", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in response.headers


@pytest.mark.parametrize(
    ("options", "userinfo", "expected"),
    [
        # the client's key is a secret for the upstream never to see
        ({}, "", []),
        ({"upstream_api_key": "upstream-key"}, "", ["Bearer upstream-key"]),
        ({"forward_authorization": True}, "", ["Bearer forii_sk_client"]),
        ({"upstream_api_key": "upstream-key", "forward_authorization": True}, "", ["Bearer upstream-key"]),
        # credentials in the upstream URL become Basic auth
        ({}, "user:s3cret@", ["Basic dXNlcjpzM2NyZXQ="]),
    ],
)
async def test_authorization(
    upstream_url: str, serve: Serve, options: dict[str, Any], userinfo: str, expected: list[str]
) -> None:
    app = proxy_app(upstream_url.replace("http://", "http://" + userinfo), **options)
    assert "s3cret" not in repr(app)
    assert "upstream-key" not in repr(app)
    proxy = serve(app)
    async with client() as http:
        echo = (await http.get(proxy.url + "/echo", headers={"Authorization": "Bearer forii_sk_client"})).json()
    assert header(echo, "authorization") == expected


# --- failures ----------------------------------------------------------------------------


async def test_unreachable_upstream_is_502(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    proxy = serve(proxy_app(f"http://user:s3cret@127.0.0.1:{closed_port()}"))
    async with client() as http:
        response = await http.post(proxy.url + "/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("server_error", None, "bad_gateway")
    assert error["message"]
    assert "s3cret" not in response.text
    assert any(r.name == "keylimit.proxy" for r in caplog.records)
    assert "s3cret" not in caplog.text


async def test_stalled_upstream_is_504(upstream: Upstream, upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url, timeout=0.2))
    async with client() as http:
        response = await http.get(proxy.url + "/stall")
    assert response.status_code == 504
    assert response.json() == {
        "error": {
            "message": "The upstream server did not answer in time.",
            "type": "server_error",
            "param": None,
            "code": "gateway_timeout",
        }
    }
    assert await observed(upstream.disconnected)


async def test_upstream_breaking_an_sse_stream_ends_it_with_an_error_event(
    upstream_url: str, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http, http.stream("GET", proxy.url + "/sse-broken") as response:
        lines = [line async for line in response.aiter_lines() if line]
    assert response.status_code == 200
    assert lines[0] == "data: 1"
    assert json.loads(lines[1].removeprefix("data: "))["error"]["code"] == "bad_gateway"
    assert len(lines) == 2
    assert [r.levelno for r in caplog.records if r.name == "keylimit.proxy"] == [logging.WARNING]


async def test_upstream_breaking_a_sized_body_cuts_the_connection(upstream_url: str, serve: Serve) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(proxy.url + "/length-broken")


async def test_client_disconnect_mid_stream_closes_the_upstream_response(
    upstream: Upstream, upstream_url: str, serve: Serve
) -> None:
    proxy = serve(proxy_app(upstream_url))
    async with client() as http, http.stream("GET", proxy.url + "/forever") as response:
        async for chunk in response.aiter_raw():
            assert chunk == b"data: first\n\n"
            break
        assert not upstream.disconnected.is_set()
    # Leaving the block closes the client's connection mid-body.
    assert await observed(upstream.disconnected)


async def test_client_disconnect_mid_upload_closes_the_upstream_request(
    upstream: Upstream, upstream_url: str, serve: Serve
) -> None:
    proxy = serve(proxy_app(upstream_url))

    class Abort(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        assert await observed(upstream.first_body_chunk)
        raise Abort

    async with client() as http:
        with pytest.raises(Abort):
            await http.post(proxy.url + "/upload-hold", content=body())
    assert await observed(upstream.disconnected)


# --- ASGI surface ------------------------------------------------------------------------


async def run_asgi(app: ASGIApp, scope: dict[str, Any], incoming: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websockets_are_refused() -> None:
    scope = {"type": "websocket", "path": "/v1/realtime", "headers": [], "query_string": b""}
    sent = await run_asgi(proxy_app("http://127.0.0.1:9"), scope, [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.close"]


async def test_lifespan_leaves_a_given_client_open() -> None:
    async with httpx.AsyncClient() as given:
        app = proxy_app("http://127.0.0.1:9", client=given)
        incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent = await run_asgi(app, {"type": "lifespan"}, incoming)
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert not given.is_closed


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "upstream",
    [
        "ftp://example.com",
        "localhost:8000",
        "http://",
        "http://u:s3cret@example.com:99999",
        "http://example.com/v1?x=1",
    ],
)
def test_bad_upstream_url_fails_at_start_up(upstream: str) -> None:
    with pytest.raises(ConfigurationError, match="upstream") as info:
        Proxy(upstream)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("key", ["", "sk-up\r\nX-Injected: 1", "clé"])
def test_bad_upstream_api_key_fails_at_start_up(key: str) -> None:
    with pytest.raises(ConfigurationError, match="upstream_api_key") as info:
        Proxy("http://127.0.0.1:8080", upstream_api_key=key)
    assert key not in str(info.value) or not key


def test_without_httpx_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'keylimit\[proxy\]'"):
        proxy_app("http://127.0.0.1:8080")


async def test_without_lifespan_the_client_is_made_at_the_first_request(upstream_url: str) -> None:
    app = proxy_app(upstream_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as http:
        response = await http.get("/teapot")
    await app.aclose()
    assert response.status_code == 418
    assert response.text == "I'm a teapot"
