"""Admission through the middleware: identities, windows, atomicity, what is counted."""

from __future__ import annotations

import json
import logging

import orjson
import pytest

from keylimit import Limits, LimitStorageUnavailable, ManualClock, Plans
from keylimit.backends import Decision, Vector
from keylimit.backends.memory import MemoryBackend
from keylimit.ratelimit._middleware import RateLimitMiddleware
from keylimit.ratelimit._tokens import EstimatingTokenCounter

from ._apps import Recorder, chat_reply
from ._asgi import call, principal
from .conftest import SMALL


def limited(
    app: Recorder, backend: MemoryBackend, clock: ManualClock, plans: Plans, **kw: object
) -> RateLimitMiddleware:
    return RateLimitMiddleware(app, limits=backend, clock=clock, plans=plans, **kw)  # type: ignore[arg-type]


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


async def test_previous_window_weighting_shows_in_remaining(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans)
    for _ in range(6):
        r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 4

    clock.advance(60 + 15)  # 25% into the next window: the previous one weighs 0.75 * 6 = 4.5
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 4  # floor(10 - 4.5 - 1)

    clock.advance(15)  # halfway: 0.5 * 6 + 1 already in this window
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 5  # 10 - 3 - 2

    clock.advance(60)  # the next window, halfway: the first window no longer counts at all
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 8  # 10 - 0.5 * 2 - 1


async def test_refused_for_prompt_tokens_leaves_the_request_count_untouched(backend, clock, plans):
    app = Recorder(reply=chat_reply("ok"))
    mw = limited(app, backend, clock, plans)
    big = chat("word " * 2_000)
    assert EstimatingTokenCounter().count_prompt(big) > SMALL.prompt_tokens

    r = await call(mw, body=big, who=principal())
    assert r.status == 429
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert "prompt tokens per minute on plan free: limit 1000, used 0" in error["message"]
    assert app.calls == 0

    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 9  # only this GET was counted
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000


async def test_requests_refusal_body_headers_and_log(backend, clock, plans, caplog):
    tight = Plans({"free": Limits(2, 1_000, 100)})
    app = Recorder()
    mw = limited(app, backend, clock, tight)
    clock.advance(30)  # halfway through the window
    for _ in range(2):
        assert (await call(mw, "GET", "/v1/models", who=principal())).status == 200
    with caplog.at_level(logging.INFO, logger="keylimit.limits"):
        r = await call(mw, "GET", "/v1/models", who=principal())

    assert r.status == 429
    assert r.json() == {
        "error": {
            "message": "Rate limit reached for requests per minute on plan free: limit 2, used 2, requested 1. "
            "Try again in 60s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    # The window ends in 30 s; by then this window's 2 weigh 2, and half of them must slide out: 30 s more.
    reset = r.int_header("x-ratelimit-reset")
    assert clock.now < reset <= clock.now + 60
    assert r.int_header("retry-after") == 60
    assert r.int_header("retry-after-ms") == 60_000
    assert reset - clock.now <= r.int_header("retry-after") <= reset - clock.now + 60
    assert r.header("x-ratelimit-reset-requests") == "1m0s"
    assert r.header("x-ratelimit-reset-tokens") == "30s"
    assert r.int_header("x-ratelimit-remaining-requests") == 0
    assert app.calls == 2
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "keylimit.limits"]
    assert "acct:acme" in line
    assert "key_a" in line
    assert "requests" in line


async def test_header_values_on_success(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans)
    clock.advance(12.5)
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.status == 200
    assert r.int_header("x-ratelimit-limit-requests") == 10
    assert r.int_header("x-ratelimit-remaining-requests") == 9
    assert r.int_header("x-ratelimit-limit-prompt-tokens") == 1_000
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000
    assert r.int_header("x-ratelimit-limit-completion-tokens") == 100
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 100
    reset = r.int_header("x-ratelimit-reset")
    assert reset % 60 == 0
    assert clock.now < reset <= clock.now + 60
    assert r.header("x-ratelimit-reset-requests") == "47.5s"
    assert r.header("x-ratelimit-reset-tokens") == "47.5s"
    assert r.header("retry-after") is None
    assert r.header("ratelimit") is None


async def test_ietf_headers(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans, ietf_headers=True)
    clock.advance(20)
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.header("ratelimit-policy") == (
        '"requests";q=10;w=60, "prompt-tokens";q=1000;w=60, "completion-tokens";q=100;w=60'
    )
    assert r.header("ratelimit") == '"requests";r=9;t=40, "prompt-tokens";r=1000;t=40, "completion-tokens";r=100;t=40'


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_errors_from_the_app_carry_the_headers(backend, clock, plans, status):
    mw = limited(Recorder(status=status, reply={"error": {"message": "no"}}), backend, clock, plans)
    r = await call(mw, body=chat("hi"), who=principal())
    assert r.status == status
    assert r.int_header("x-ratelimit-remaining-requests") == 9
    assert r.header("x-ratelimit-reset") is not None


async def test_upstream_rate_limit_headers_are_replaced_not_doubled(backend, clock, plans):
    async def upstream(scope, receive, send):
        headers = [(b"content-type", b"text/plain"), (b"x-ratelimit-remaining-requests", b"999"), (b"ratelimit", b"x")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = RateLimitMiddleware(upstream, limits=backend, clock=clock, plans=plans, ietf_headers=True)
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 9  # Response.header asserts a single value
    assert r.header("ratelimit") is not None
    assert r.header("ratelimit") != "x"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/accounts/acme/apiKeys",  # management
        "/v1/accounts",
        "/health",  # open paths
        "/ping",
    ],
)
async def test_management_and_open_paths_are_neither_counted_nor_labelled(backend, clock, plans, path):
    app = Recorder()
    mw = limited(app, backend, clock, plans, management_path="/v1/accounts")
    for _ in range(12):  # more than the plan allows
        r = await call(mw, "GET", path, who=principal())
        assert r.status == 200
        assert not [n for n, _ in r.headers if n.startswith(b"x-ratelimit")]
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 9


async def test_get_counts_one_request_and_no_tokens(backend, clock, plans):
    mw = limited(Recorder(reply={"object": "list", "data": []}), backend, clock, plans)
    await call(mw, "GET", "/v1/models", who=principal())
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 8
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 100


async def test_the_management_prefix_is_counted_where_no_management_api_is_served(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans)  # no management_path: nothing under it is exempt
    r = await call(mw, "GET", "/v1/accounts/acme/apiKeys", who=principal())
    assert r.int_header("x-ratelimit-remaining-requests") == 9


@pytest.mark.parametrize(
    "content_type",
    [b"text/plain", b"application/x-www-form-urlencoded", b"application/octet-stream", None],
)
async def test_a_chat_body_is_charged_whatever_its_content_type_says(backend, clock, plans, content_type):
    # Servers such as llama.cpp's parse the body whatever its type: the body decides, not the header.
    app = Recorder(reply=chat_reply("ok", {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
    mw = limited(app, backend, clock, plans)
    body = orjson.dumps(chat("hello " * 50))
    headers = [] if content_type is None else [(b"content-type", content_type)]
    r = await call(mw, body=body, headers=[*headers, (b"content-length", b"%d" % len(body))], who=principal())
    assert app.bodies == [body]
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") < 1_000 - 50
    after = await call(mw, "GET", "/v1/models", who=principal())
    assert after.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - 5  # corrected to the usage
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == 100 - 7


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET", "QUERY"])
async def test_a_chat_body_is_charged_whatever_the_method(backend, clock, plans, method):
    app = Recorder(reply=chat_reply("ok", {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
    mw = limited(app, backend, clock, plans)
    await call(mw, method, body=chat("hello"), who=principal())
    after = await call(mw, "GET", "/v1/models", who=principal())
    assert after.int_header("x-ratelimit-remaining-completion-tokens") == 100 - 7


async def test_a_body_that_is_not_json_is_charged_by_its_length_and_reaches_the_app_untouched(backend, clock, plans):
    app = Recorder()
    mw = limited(app, backend, clock, plans)
    body = b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\n" + b"hello " * 40 + b"\r\n--x--\r\n"
    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    r = await call(mw, body=body, headers=headers, who=principal())
    assert app.bodies == [body]
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") <= 1_000 - 40


@pytest.mark.parametrize(
    "body",
    [
        # not JSON to keylimit; some servers would read it all the same
        b"{not json",
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"prompt": "hi", "temperature": NaN}',
        b'{"prompt": "\\udcff"}',
        b"\xef\xbb\xbf" + b'{"prompt": "hi"}',
        b'{"prompt": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
        b'{"max_tokens": ' + b"9" * 5_000 + b', "prompt": "hi"}',
    ],
)
async def test_unreadable_bodies_reach_the_app_untouched_and_are_charged_by_length(backend, clock, plans, body):
    app = Recorder(status=400, reply={"error": {"message": "bad"}})
    mw = limited(app, backend, clock, plans)
    r = await call(mw, body=body, who=principal())
    estimate = EstimatingTokenCounter().count_text(body.decode("utf-8", "replace"))
    if estimate > 1_000:
        assert r.status == 429  # more than the whole plan: it never fits
        assert app.bodies == []
        return
    assert r.status == 400
    assert app.bodies == [body]
    assert r.int_header("x-ratelimit-remaining-requests") == 9
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - estimate


@pytest.mark.parametrize(
    "body",
    [
        b'["messages"]',
        b'"hello"',
        b'{"model": "m"}',
        b"",
        b"   ",
    ],
)
async def test_json_that_carries_no_tokens_counts_one_request(backend, clock, plans, body):
    app = Recorder(status=400, reply={"error": {"message": "bad"}})
    mw = limited(app, backend, clock, plans)
    r = await call(mw, body=body, who=principal())
    assert r.status == 400
    assert app.bodies == [body]
    assert r.int_header("x-ratelimit-remaining-requests") == 9
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000


async def test_413_when_content_length_is_over_the_cap(backend, clock, plans):
    app = Recorder()
    mw = limited(app, backend, clock, plans, max_body_bytes=1_000)
    received: list[bool] = []

    async def never(message, response):  # pragma: no cover - must not be called
        received.append(True)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
    r = await call(mw, body=b"x" * 5_000, headers=headers, who=principal())
    assert r.status == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.header("x-ratelimit-limit-requests") == "10"
    assert app.calls == 0


async def test_413_when_a_chunked_body_grows_over_the_cap(backend, clock, plans):
    app = Recorder()
    mw = limited(app, backend, clock, plans, max_body_bytes=1_000)
    chunks = [b'{"prompt": "' + b"a" * 390, b"a" * 400, b"a" * 400 + b'"}']
    r = await call(mw, chunks=chunks, headers=[(b"content-type", b"application/json")], who=principal())
    assert r.status == 413
    assert app.calls == 0


async def test_a_chunked_body_under_the_cap_is_replayed_whole(backend, clock, plans):
    app = Recorder(reply=chat_reply("ok", {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}))
    mw = limited(app, backend, clock, plans, max_body_bytes=1_000)
    chunks = [b'{"prompt": "', b"a" * 300, b'"}']
    r = await call(mw, chunks=chunks, headers=[(b"content-type", b"application/json")], who=principal())
    assert r.status == 200
    assert app.bodies == [b"".join(chunks)]


async def test_later_receive_calls_pass_through(backend, clock, plans):
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = RateLimitMiddleware(app, limits=backend, clock=clock, plans=plans)
    await call(mw, body=chat("hi"), who=principal())
    assert seen == ["http.request", "http.disconnect"]


async def test_prompt_estimate_is_charged_then_corrected_by_usage(backend, clock, plans):
    body = chat("Tell me a story about a lighthouse keeper and a storm.")
    estimate = EstimatingTokenCounter().count_prompt(body)
    app = Recorder(reply=chat_reply("Once.", {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}))
    mw = limited(app, backend, clock, plans)

    r = await call(mw, body=body, who=principal())
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - estimate  # at admission
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - 40
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 100 - 9


async def test_without_usage_the_text_of_the_answer_is_counted(backend, clock, plans):
    content = "The quick brown fox jumps over the lazy dog, twice over."
    mw = limited(Recorder(reply=chat_reply(content)), backend, clock, plans)
    await call(mw, body=chat("hi"), who=principal())
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 100 - EstimatingTokenCounter().count_text(content)


async def test_reserve_max_tokens_charges_up_front_and_settles(backend, clock, plans):
    app = Recorder(reply=chat_reply("ok", {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}))
    mw = limited(app, backend, clock, plans, reserve_max_tokens=True)
    r = await call(mw, body=chat("hi", max_tokens=60), who=principal())
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 40
    r = await call(mw, body=chat("hi", max_tokens=60), who=principal())
    assert r.status == 200  # the first one settled at 3: 97 left
    r = await call(mw, body=chat("hi", max_tokens=200), who=principal())
    assert r.status == 429
    assert "completion tokens per minute" in r.json()["error"]["message"]


async def test_no_completion_token_left_refuses_generation_but_not_embeddings(backend, clock, plans):
    app = Recorder(reply=chat_reply("ok", {"prompt_tokens": 2, "completion_tokens": 100, "total_tokens": 102}))
    mw = limited(app, backend, clock, plans)
    assert (await call(mw, body=chat("hi"), who=principal())).status == 200  # uses all 100
    r = await call(mw, body=chat("hi"), who=principal())
    assert r.status == 429
    assert r.json()["error"]["type"] == "tokens"
    app.reply = {"object": "list", "data": [], "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    r = await call(mw, "POST", "/v1/embeddings", body={"model": "e", "input": "hi"}, who=principal())
    assert r.status == 200


async def test_accounts_share_their_plan_and_are_kept_apart(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans)
    await call(mw, "GET", "/v1/models", who=principal("acme", key="key_a"))
    r = await call(mw, "GET", "/v1/models", who=principal("acme", key="key_b"))
    assert r.int_header("x-ratelimit-remaining-requests") == 8
    r = await call(mw, "GET", "/v1/models", who=principal("other"))
    assert r.int_header("x-ratelimit-remaining-requests") == 9
    r = await call(mw, "GET", "/v1/models", who=principal("big", plan="pro"))
    assert r.int_header("x-ratelimit-limit-requests") == 6_000
    r = await call(mw, "GET", "/v1/models", who=principal("custom", plan="enterprise", limits=Limits(7, 70, 7)))
    assert r.int_header("x-ratelimit-limit-requests") == 7
    assert r.int_header("x-ratelimit-limit-prompt-tokens") == 70


async def test_without_a_principal_the_client_address_is_limited_on_the_default_plan(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans)
    await call(mw, "GET", "/v1/models", client=("10.0.0.1", 1))
    r = await call(mw, "GET", "/v1/models", client=("10.0.0.1", 2))
    assert r.int_header("x-ratelimit-remaining-requests") == 8
    assert r.int_header("x-ratelimit-limit-requests") == 10
    r = await call(mw, "GET", "/v1/models", client=("10.0.0.2", 1))
    assert r.int_header("x-ratelimit-remaining-requests") == 9


async def test_an_identity_of_none_is_not_limited(backend, clock, plans):
    mw = limited(Recorder(), backend, clock, plans, identity=lambda scope: None)
    for _ in range(12):
        r = await call(mw, "GET", "/v1/models")
        assert r.status == 200
        assert r.header("x-ratelimit-limit-requests") is None


async def test_lifespan_and_websocket_pass_through(backend, clock, plans):
    app = Recorder()
    mw = limited(app, backend, clock, plans)

    async def nothing():  # pragma: no cover
        raise AssertionError

    async def drop(message):  # pragma: no cover
        raise AssertionError

    await mw({"type": "lifespan", "asgi": {"version": "3.0"}}, nothing, drop)
    await mw({"type": "websocket", "path": "/v1/realtime", "headers": []}, nothing, drop)
    assert [s["type"] for s in app.scopes] == ["lifespan", "websocket"]


class FailingBackend(MemoryBackend):
    """Storage that fails: the failure-policy wrapper raises this for policy ``closed``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(60.0)
        self.error = error

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        raise self.error


@pytest.mark.parametrize("error", [LimitStorageUnavailable("down"), RuntimeError("bug")])
async def test_limit_storage_failure_is_a_503_never_a_500(clock, plans, error):
    app = Recorder()
    mw = RateLimitMiddleware(app, limits=FailingBackend(error), clock=clock, plans=plans)
    r = await call(mw, body=chat("hi"), who=principal())
    assert r.status == 503
    assert r.json()["error"]["code"] == "service_unavailable"
    assert r.int_header("retry-after") >= 1
    assert app.calls == 0


async def test_limits_from_a_url():
    mw = RateLimitMiddleware(Recorder(), limits="memory://", window=30)
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-limit-requests") == 60  # the reference's free plan
    assert json.loads(r.body) == {}
    await mw.aclose()


async def test_usage_quoted_inside_the_answer_text_is_not_taken_for_usage(backend, clock, plans):
    content = 'Write it as "usage": {"prompt_tokens": 900, "completion_tokens": 90} in the file.'
    mw = limited(Recorder(reply=chat_reply(content)), backend, clock, plans)
    await call(mw, body=chat("hi"), who=principal())
    r = await call(mw, "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-completion-tokens") == 100 - EstimatingTokenCounter().count_text(content)


async def test_usage_at_the_end_of_a_body_too_big_to_copy(backend, clock, plans, monkeypatch):
    monkeypatch.setattr("keylimit.http._taps.JSON_COPY_BYTES", 1_000)
    vectors = [{"object": "embedding", "index": i, "embedding": [0.125] * 50} for i in range(20)]
    reply = {"object": "list", "data": vectors, "usage": {"prompt_tokens": 321, "total_tokens": 321}}
    body = json.dumps(reply).encode()
    assert len(body) > 1_000

    async def chunked(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        for i in range(0, len(body), 300):
            await send({"type": "http.response.body", "body": body[i : i + 300], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    mw = RateLimitMiddleware(chunked, limits=backend, clock=clock, plans=plans)
    r = await call(mw, "POST", "/v1/embeddings", body={"model": "e", "input": ["a"] * 20}, who=principal())
    assert r.body == body
    r = await call(limited(Recorder(), backend, clock, plans), "GET", "/v1/models", who=principal())
    assert r.int_header("x-ratelimit-remaining-prompt-tokens") == 1_000 - 321
