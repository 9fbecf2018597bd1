"""Issue 6, item 3: oversized headers and bodies, slow senders and many connections, against a real
uvicorn (h11) serving ``Protect``. Each is refused cheaply or bounded; what bounds it is named.

- Header blocks: uvicorn's h11 refuses an incomplete header block past
  ``h11_max_incomplete_event_size`` (16 KiB) with a plain 400 and closes; keylimit never sees it.
  A long ``Authorization`` header that does arrive is refused unread (over 256 bytes: 401).
- Bodies: over ``KEYLIMIT_MAX_BODY_BYTES`` by Content-Length → 413 before a byte is read; chunked
  → 413 as soon as the bytes read pass the cap.
- Slow senders: uvicorn bounds no started body (``timeout_keep_alive`` only runs between
  requests), so keylimit does: the whole JSON body must arrive within ``KEYLIMIT_BODY_TIMEOUT``
  seconds of the first read (a total deadline, so a trickle of bytes does not reset it), else 408.
- Connections: idle connections cost uvicorn a protocol object each and nothing else; 500 of them
  do not stop valid requests. ``--limit-concurrency N`` is the knob that caps them: past N
  connections uvicorn answers 503 before any app code runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from keylimit import Config
from keylimit.auth._hashing import CHEAPEST

from ._apps import protected
from ._keys import ADMIN, make_key
from ._server import RawResponse, Server, read_response
from .conftest import Serve

CAP = 1024
BODY_TIMEOUT = 0.5
GUARD = 10.0  # against a hung test, not a timing claim


def config(**settings: Any) -> Config:
    defaults: dict[str, Any] = {
        "keys_url": "memory://",
        "admin_token": ADMIN,
        "argon2": CHEAPEST,
        "max_body_bytes": CAP,
        "body_timeout": BODY_TIMEOUT,
    }
    return Config(**{**defaults, **settings})


@contextlib.asynccontextmanager
async def connection(server: Server) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def head(method: str, path: str, token: str | None, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def assert_error(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", code)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for the server thread to get there (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# --- headers


async def test_an_incomplete_header_block_over_h11s_limit_gets_a_plain_400(serve: Serve) -> None:
    server = serve(protected(config()))
    async with connection(server) as (reader, writer):
        # 20 KiB and still no end of the header block, in one write: the server reads all of it
        # before it refuses, so its close is a clean one and the 400 is not lost to a reset.
        writer.write(b"GET /whoami HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20 * 1024)
        await writer.drain()
        response = await read_response(reader)
    print(f"\n20 KiB incomplete header block: {response.status} {response.body!r}")
    assert response.status == 400
    assert response.body == b"Invalid HTTP request received."
    async with httpx.AsyncClient(base_url=server.url) as client:  # the server goes on serving
        assert (await client.get("/health")).text == "ok"


async def test_a_megabyte_of_headers_from_httpx_is_cut_off(serve: Serve) -> None:
    server = serve(protected(config()))
    async with httpx.AsyncClient(base_url=server.url) as client:
        try:
            response = await client.get("/whoami", headers={"x-big": "a" * 1024 * 1024})
        except httpx.TransportError as exc:  # the server closed while the client was still writing
            outcome = f"{type(exc).__name__}"
        else:
            outcome = f"{response.status_code} {response.text}"
            assert (response.status_code, response.text) == (400, "Invalid HTTP request received.")
        print(f"\n1 MiB header through httpx: {outcome}")
        assert (await client.get("/health")).text == "ok"


async def test_a_long_authorization_header_is_refused_unread(serve: Serve) -> None:
    server = serve(protected(config()))
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/whoami", headers={"authorization": "Bearer " + "k" * 12_000})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


# --- bodies


async def test_a_body_over_the_cap_by_content_length_gets_413_before_it_is_sent(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    async with connection(server) as (reader, writer):
        writer.write(head("POST", "/echo", token, "Content-Type: application/json", "Content-Length: 10000000000"))
        await writer.drain()
        response = await read_response(reader)  # not one body byte was sent
    assert_error(response, 413, "request_too_large")
    assert f"limit of {CAP} bytes" in response.json()["error"]["message"]
    assert "x-ratelimit-remaining-requests" in response.headers  # it counted as one request


async def test_a_chunked_body_gets_413_once_past_the_cap(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    async with connection(server) as (reader, writer):
        writer.write(head("POST", "/echo", token, "Content-Type: application/json", "Transfer-Encoding: chunked"))
        sent = 0
        for _ in range(3):  # 3 x 512 > 1024; no last chunk: the client would go on
            writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
            sent += 512
        await writer.drain()
        response = await read_response(reader)
    assert sent > CAP
    assert_error(response, 413, "request_too_large")


async def test_a_body_at_the_cap_is_served(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    body = json.dumps({"pad": "x" * (CAP - 11)}).encode()
    assert len(body) == CAP
    async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {token}"}) as client:
        response = await client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"length": CAP}


# --- slow senders


async def test_a_body_that_stops_coming_gets_408_even_past_uvicorns_keep_alive(serve: Serve) -> None:
    # timeout_keep_alive=1 (uvicorn's smallest) would have closed the connection long before the
    # 408 if it covered a started body: it does not.
    server = serve(protected(config(body_timeout=1.5)), timeout_keep_alive=1)
    token = make_key(server.url)
    async with connection(server) as (reader, writer):
        writer.write(head("POST", "/echo", token, "Content-Type: application/json", "Content-Length: 100") + b"{")
        await writer.drain()
        response = await read_response(reader)
    assert_error(response, 408, "request_timeout")
    assert response.json()["error"]["message"] == "The request body did not arrive within 1.5 seconds."
    assert "x-ratelimit-remaining-requests" in response.headers


async def test_a_trickling_body_gets_408_before_it_ends(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    async with connection(server) as (reader, writer):
        writer.write(head("POST", "/echo", token, "Content-Type: application/json", "Content-Length: 200"))
        answer = asyncio.ensure_future(read_response(reader))
        sent = 0
        while not answer.done() and sent < 200:
            writer.write(b" ")  # a byte every 50 ms: 10 s for the whole body
            await writer.drain()
            sent += 1
            await asyncio.wait([answer], timeout=0.05)  # the client's own pace
        response = await answer
    print(f"\ntrickle: 408 after {sent} of 200 bytes")
    assert sent < 200
    assert_error(response, 408, "request_timeout")


async def test_a_body_on_time_is_not_cut(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    async with connection(server) as (reader, writer):
        writer.write(head("POST", "/echo", token, "Content-Type: application/json", "Content-Length: 2"))
        writer.write(b"{}")
        await writer.drain()
        response = await read_response(reader)
    assert response.status == 200
    assert response.json() == {"length": 2}


# --- many connections


async def test_500_idle_connections_do_not_stop_valid_requests(serve: Serve) -> None:
    server = serve(protected(config()))
    token = make_key(server.url)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(500)]
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {token}"}) as client:
            responses = [await client.get("/whoami") for _ in range(20)]
        assert {r.status_code for r in responses} == {200}
        # Accepted in order: the idle ones were all held when the valid ones were served.
        assert server.connections >= 500
    finally:
        for _, writer in idle:
            writer.close()


async def test_limit_concurrency_refuses_past_n_connections_with_503(serve: Serve) -> None:
    server = serve(protected(config()), limit_concurrency=50)
    token = make_key(server.url)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(60)]
    try:
        await until(lambda: server.connections >= 60, "uvicorn to hold 60 connections")
        async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {token}"}) as client:
            refused = await client.get("/whoami")
            print(f"\nover --limit-concurrency: {refused.status_code} {refused.text!r}")
            assert (refused.status_code, refused.text) == (503, "Service Unavailable")
            assert "x-ratelimit-remaining-requests" not in refused.headers  # keylimit never ran
            for _, writer in idle:
                writer.close()
            await until(lambda: server.connections < 10, "uvicorn to drop the idle connections")
            assert (await client.get("/whoami")).status_code == 200
    finally:
        for _, writer in idle:
            writer.close()
