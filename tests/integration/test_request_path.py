"""One request path: what is exempt, and what a body is, decided once for every layer.

Each test is a way around the keys or the limits that a client who wants to pay less might
try: a management prefix nothing serves, a preflight with a body, a chat body sent as
text/plain or compressed, nesting near the parser's limit.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from keylimit import Limits, Protect
from keylimit.demo import demo_model_app
from keylimit.proxy import proxy_app
from tests.proxy._servers import ServerThread

from .conftest import (
    ADMIN,
    TINY,
    MakeProtect,
    assert_openai_error,
    bearer,
    chat,
    client,
    config,
    make_key,
    remaining,
)

FULL = remaining  # the rate limit headers, for readability below


async def accounts_route(request: Request) -> Response:
    return JSONResponse({"served_by": "the app"})


def app_with_account_routes() -> Starlette:
    return Starlette(
        routes=[Route("/v1/accounts/{rest:path}", accounts_route), Mount("/inference/v1", demo_model_app())]
    )


# --- case 1: the management prefix is exempt only while management is served there


async def test_without_management_the_apps_own_account_routes_need_a_key_and_are_counted(
    make_protect: MakeProtect,
) -> None:
    protect = make_protect(app_with_account_routes(), management=False, plans={"free": TINY})
    token = await make_key(protect)
    async with client(protect) as c:
        anonymous = await c.get("/v1/accounts/acme/apiKeys")
        assert_openai_error(anonymous, 401, "invalid_request_error", "missing_api_key")
        served = await c.get("/v1/accounts/acme/apiKeys", headers=bearer(token))
        assert served.json() == {"served_by": "the app"}
        assert FULL(served)[0] == TINY.requests - 1
        again = await c.get("/v1/accounts/acme/apiKeys", headers=bearer(token))
        assert FULL(again)[0] == TINY.requests - 2


async def test_with_management_its_prefix_reaches_the_management_api_not_the_app(make_protect: MakeProtect) -> None:
    protect = make_protect(app_with_account_routes())
    token = await make_key(protect, "acme")
    async with client(protect) as c:
        listed = await c.get("/v1/accounts/acme/apiKeys", headers=bearer(token))
    assert listed.status_code == 200
    assert listed.json()["object"] == "list"
    assert "x-ratelimit-remaining-requests" not in listed.headers


# --- case 4: CORS preflights are neither authenticated nor counted


def cors_app() -> Starlette:
    return Starlette(
        routes=[Mount("/inference/v1", demo_model_app())],
        middleware=[Middleware(CORSMiddleware, allow_origins=["https://app.example"], allow_methods=["*"])],
    )


PREFLIGHT = {"origin": "https://app.example", "access-control-request-method": "POST"}


async def test_preflights_are_never_counted_nor_refused(make_protect: MakeProtect) -> None:
    protect = make_protect(cors_app(), plans={"free": TINY})
    token = await make_key(protect)
    async with client(protect) as c:
        for _ in range(3 * TINY.requests):
            preflight = await c.options("/inference/v1/chat/completions", headers=PREFLIGHT)
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            assert "x-ratelimit-remaining-requests" not in preflight.headers
        real = await c.post(
            "/inference/v1/chat/completions", json=chat("hi"), headers={**bearer(token), "origin": PREFLIGHT["origin"]}
        )
    assert real.status_code == 200
    assert FULL(real)[0] == TINY.requests - 1


@pytest.mark.parametrize(
    "headers",
    [
        {"access-control-request-method": "POST"},  # no Origin: not a browser's preflight
        {"origin": "https://app.example"},
        {**PREFLIGHT, "content-length": "2"},  # a preflight carries no body
    ],
)
async def test_an_options_request_that_is_not_a_preflight_needs_a_key(
    make_protect: MakeProtect, headers: dict[str, str]
) -> None:
    protect = make_protect(cors_app())
    async with client(protect) as c:
        content = b"{}" if "content-length" in headers else None
        answer = await c.request("OPTIONS", "/inference/v1/chat/completions", headers=headers, content=content)
    assert_openai_error(answer, 401, "invalid_request_error", "missing_api_key")


# --- case 3: nesting near the parser's depth limit, with every kind of stream request


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


STREAM_OPTIONS = [None, "null", "{}", '{"include_usage":false}', '{"include_usage":true}', '"x"']


@st.composite
def deep_chat_bodies(draw: st.DrawFn) -> bytes:
    # Both sides of where the standard library's recursion and orjson's depth limit give out.
    depth = draw(st.integers(995, 1_025) | st.integers(900, 1_100))
    stream = draw(st.sampled_from([None, "true", "false"]))
    options = draw(st.sampled_from(STREAM_OPTIONS))
    where = draw(st.sampled_from(["content", "extra", "options"]))
    members = ['"model":"keylimit/demo"']
    content = nested(depth) if where == "content" else '"hi"'
    members.append(f'"messages":[{{"role":"user","content":{content}}}]')
    if stream is not None:
        members.append(f'"stream":{stream}')
    if options is not None:
        members.append(f'"stream_options":{nested(depth) if where == "options" else options}')
    if where == "extra":
        members.append(f'"metadata":{nested(depth)}')
    return ("{" + ",".join(members) + "}").encode()


@pytest.fixture(scope="module")
def deep_protect() -> Protect:
    return Protect(
        Starlette(routes=[Mount("/inference/v1", demo_model_app())]),
        config(plans={"free": Limits(10**9, 10**12, 10**12)}),
    )


def deep_example(depth: int, options: str) -> bytes:
    content = nested(depth)
    return (
        f'{{"model":"keylimit/demo","messages":[{{"role":"user","content":{content}}}],'
        f'"stream":true,"stream_options":{options}}}'
    ).encode()


async def answered_and_counted(deep_protect: Protect, body: bytes) -> None:
    token = await make_key(deep_protect)
    async with client(deep_protect) as c:
        answer = await c.post("/inference/v1/chat/completions", content=body, headers=bearer(token))
        after = await c.get("/inference/v1/models", headers=bearer(token))
    assert answer.status_code < 500
    assert "x-ratelimit-remaining-requests" in answer.headers
    if answer.status_code >= 400:
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    # The body was counted as a token request: prompt tokens were charged.
    assert FULL(after)[1] < 10**12


# Hypothesis raises the recursion limit while it runs a test, which hides the standard
# library's RecursionError: the depths where it gives out are also tested plainly.
@pytest.mark.parametrize("depth", [995, 1_000, 1_005, 1_020, 1_021, 1_022, 1_024, 1_100])
@pytest.mark.parametrize("options", ["null", "{}", '{"include_usage":false}'])
async def test_a_deep_stream_body_that_asks_for_no_usage_is_answered_and_counted(
    deep_protect: Protect, depth: int, options: str
) -> None:
    await answered_and_counted(deep_protect, deep_example(depth, options))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(body=deep_chat_bodies())
async def test_deep_bodies_are_answered_and_counted_never_500(deep_protect: Protect, body: bytes) -> None:
    await answered_and_counted(deep_protect, body)


# --- compressed request bodies are read decoded, or refused


def chat_bytes(text: str) -> bytes:
    return json.dumps(chat(text)).encode()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate under the same name
        ("gzip, identity", gzip.compress),
    ],
)
async def test_a_compressed_chat_body_is_decoded_charged_and_handed_on_decoded(
    make_protect: MakeProtect, coding: str, encode: Any
) -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def record(request: Request) -> Response:
        seen.append((await request.body(), request.headers.get("content-encoding")))
        return JSONResponse({"choices": [], "usage": {"prompt_tokens": 200, "completion_tokens": 3}})

    protect = make_protect(Starlette(routes=[Route("/v1/chat/completions", record, methods=["POST"])]))
    token = await make_key(protect)
    raw = chat_bytes("hello " * 200)
    async with client(protect) as c:
        answer = await c.post(
            "/v1/chat/completions", content=encode(raw), headers={**bearer(token), "content-encoding": coding}
        )
        after = await c.get("/v1/models", headers=bearer(token))
    assert answer.status_code == 200
    assert seen == [(raw, None)]
    assert FULL(answer)[1] < 100_000 - 150  # the estimate of the decoded prompt was charged before
    assert FULL(after)[1:] == (100_000 - 200, 10_000 - 3)


@pytest.mark.parametrize(
    ("coding", "body", "status", "code"),
    [
        ("br", b"\x0b\x02\x80hello\x03", 415, "unsupported_content_encoding"),
        ("zstd", b"(\xb5/\xfd", 415, "unsupported_content_encoding"),
        ("gzip", b"not gzip at all", 400, "invalid_request"),
        ("gzip", gzip.compress(b"{}")[:-3], 400, "invalid_request"),
        ("gzip", gzip.compress(b" " * 2_000_000), 413, "request_too_large"),  # a small body that inflates past the cap
    ],
)
async def test_a_request_body_keylimit_cannot_read_is_refused_and_never_forwarded(
    make_protect: MakeProtect, coding: str, body: bytes, status: int, code: str
) -> None:
    calls: list[int] = []

    async def record(request: Request) -> Response:
        calls.append(1)
        return JSONResponse({})

    protect = make_protect(
        Starlette(routes=[Route("/v1/chat/completions", record, methods=["POST"])]), max_body_bytes=1_000_000
    )
    token = await make_key(protect)
    async with client(protect) as c:
        answer = await c.post(
            "/v1/chat/completions", content=body, headers={**bearer(token), "content-encoding": coding}
        )
    assert_openai_error(answer, status, "invalid_request_error", code)
    assert FULL(answer)[0] == 60 - 1  # counted as one request
    assert calls == []


# --- case 10: the body decides, through a real proxy to a server that parses any content type


@pytest.fixture
def proxied() -> Iterator[tuple[str, Protect]]:
    upstream = ServerThread(demo_model_app()).start()
    protect = Protect(proxy_app(upstream.url), config())
    front = ServerThread(protect).start()
    try:
        yield front.url, protect
    finally:
        front.stop()
        upstream.stop()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_chat_completion_sent_as_another_type_through_the_proxy_is_charged(
    proxied: tuple[str, Protect], content_type: str | None
) -> None:
    url, protect = proxied
    token = await make_key(protect)
    headers = bearer(token) if content_type is None else {**bearer(token), "content-type": content_type}
    async with httpx.AsyncClient(base_url=url) as c:
        answer = await c.post("/chat/completions", content=chat_bytes("tell me a story " * 20), headers=headers)
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usage"]
        assert usage["completion_tokens"] > 0
        expected = (100_000 - usage["prompt_tokens"], 10_000 - usage["completion_tokens"])
        # The server settles a response when it has sent its end, which the client may see first.
        for _ in range(50):
            after = await c.get("/models", headers=bearer(token))
            if FULL(after)[1:] == expected:
                break
    assert FULL(after)[1:] == expected


# --- the management API: a body it cannot read is 400, never 500


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": ' + b"[" * 1_005 + b"]" * 1_005 + b"}",
        b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"name": "\\udcff"}',
        b"\xff\xfe",
        b'{"name": NaN}',
    ],
)
async def test_a_management_body_keylimit_cannot_read_is_400(make_protect: MakeProtect, body: bytes) -> None:
    protect = make_protect()
    async with client(protect) as c:
        answer = await c.post("/v1/accounts/acme/apiKeys", content=body, headers=bearer(ADMIN))
    assert_openai_error(answer, 400, "invalid_request_error", "invalid_request")
