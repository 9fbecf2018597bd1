"""Request bodies to POST /v1/chat/completions with the real key, generated: invalid JSON,
wrong types for every field the limiter reads, huge numbers, deep nesting, non-UTF-8,
empty bodies, content types and Content-Length values that do not match the body.

The app behind answers 200 with a fixed JSON body, so any other answer is keylimit's own:
413 for a body over the cap (announced or sent), whatever its content type, else 200; rate
limit headers on both; the app receives the body as sent, or rewritten only to ask a stream
for its usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from ._harness import USAGE_REPLY, FixedApp, Harness, pieces
from .conftest import CASES

CAP = 256 * 1024
FIELDS = ("messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "prompt", "input")

TOO_LARGE = {
    "error": {
        "message": f"Request body is larger than the limit of {CAP} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
}


@pytest.fixture(scope="module")
def app() -> FixedApp:
    return FixedApp()


@pytest.fixture(scope="module")
def harness(app: FixedApp) -> Iterator[Harness]:
    h = Harness(app, max_body_bytes=CAP)
    yield h
    h.close()


huge_ints = st.sampled_from([2**53, 2**63, 2**64 + 1, -(10**100)]) | st.integers(20, 4200).map(lambda d: 10**d)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": json_values,
            "content": json_values | st.lists(st.fixed_dictionaries({"type": json_values, "text": json_values})),
            "name": json_values,
            "tool_calls": json_values,
        },
    )
    | json_values,
    max_size=4,
)
fields = dict.fromkeys(FIELDS, json_values)
fields["messages"] = messages | json_values
fields["stream"] = st.sampled_from([True, False, "true", 1, None]) | json_values
fields["stream_options"] = st.fixed_dictionaries({}, optional={"include_usage": json_values}) | json_values
objects = st.fixed_dictionaries({}, optional={"model": json_values, **fields})
streams = st.fixed_dictionaries(
    {"messages": messages, "stream": st.just(True)},
    optional={k: v for k, v in fields.items() if k not in ("stream", "messages")},
)


def dump(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


@st.composite
def tweaked(draw: st.DrawFn) -> bytes:
    """A JSON text made hostile after encoding: huge numbers, deep nesting, other encodings, junk."""
    kind = draw(st.sampled_from(["digits", "nesting", "encoding", "inject", "truncate", "nan", "duplicate"]))
    if kind == "digits":
        digits = b"9" * draw(st.integers(1, 6000))
        field = draw(st.sampled_from([b"max_tokens", b"n", b"max_completion_tokens", b"prompt"]))
        sign = draw(st.sampled_from([b"", b"-"]))
        return b'{"messages": [], "stream": true, "' + field + b'": ' + sign + digits + b"}"
    if kind == "nesting":
        depth = draw(st.integers(1, 100_000))
        open_, close = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return b'{"messages": ' + open_ * depth + b"1" + close * depth + b"}"
    body = draw(objects)
    if kind == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1"]))
        return json.dumps(body, ensure_ascii=False).encode(codec, "replace")
    raw = dump(body)
    if kind == "inject":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if kind == "nan":
        return raw[:-1] + b', "max_tokens": NaN, "n": Infinity, "prompt": -Infinity}' if len(raw) > 2 else raw
    return raw[:-1] + (b", " if len(raw) > 2 else b"") + b'"messages": 1, "messages": [{"content": "x"}]}'


oversized = st.integers(CAP - 2, CAP + 2).map(lambda n: b'{"prompt": "' + b"a" * (n - 14) + b'"}')
bodies = (
    objects.map(dump)
    | streams.map(dump)
    | oversized
    | json_values.map(dump)
    | tweaked()
    | st.binary(max_size=500)
    | st.just(b"")
    | st.sampled_from([b"null", b"[]", b"{}", b'"x"', b"\xff\xfe", b"\x00" * 10])
    | oversized
)
content_types = st.sampled_from(
    [
        None,
        b"application/json",
        b"application/json; charset=utf-8",
        b"APPLICATION/JSON",
        b" application/json ;",
        b"application/vnd.api+json",
        b"text/plain",
        b"multipart/form-data; boundary=x",
        b"application/x-www-form-urlencoded",
        b"",
        b"\xff\x00json",
    ]
) | st.binary(max_size=30)


@st.composite
def content_lengths(draw: st.DrawFn, size: int) -> bytes | None:
    return draw(
        st.none()
        | st.just(b"%d" % size)
        | st.integers(0, 2 * CAP).map(lambda n: b"%d" % n)
        | st.sampled_from([b"", b"-1", b"abc", b"1e3", b" 12", b"9" * 30, b"%d" % (CAP + 1), b"\xd9\xa1"])
    )


def too_large(body: bytes, content_type: bytes | None, length: bytes | None) -> bool:
    """The contract: every body is read up to the cap, announced or sent, whatever its type."""
    announced = length is not None and length.isascii() and length.isdigit() and int(length) > CAP
    return announced or len(body) > CAP


def asks_for_usage(original: bytes, forwarded: bytes) -> bool:
    """``forwarded`` is ``original`` with ``stream_options.include_usage`` set, and nothing else changed."""
    before, after = json.loads(original), json.loads(forwarded)
    if not isinstance(before, dict) or not isinstance(after, dict) or before.get("stream") is not True:
        return False
    options = after.pop("stream_options", None)
    previous = before.pop("stream_options", None) or {}
    return options == {**previous, "include_usage": True} and after == before


@given(data=st.data())
@CASES
def test_every_request_body_gets_a_documented_answer(harness: Harness, app: FixedApp, data: st.DataObject) -> None:
    body = data.draw(bodies, label="body")
    content_type = data.draw(content_types, label="content-type")
    length = data.draw(content_lengths(len(body)), label="content-length")
    chunks = data.draw(pieces(body), label="chunks")
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if length is not None:
        headers.append((b"content-length", length))
    calls = len(app.bodies)

    response = harness.request("POST", "/v1/chat/completions", headers=headers, chunks=chunks)

    event(f"status {response.status}")
    response.assert_rate_limit_headers()
    if too_large(body, content_type, length):
        assert response.status == 413
        response.assert_openai_error()
        assert response.json() == TOO_LARGE
        assert len(app.bodies) == calls
        return
    assert response.status == 200
    assert response.body == USAGE_REPLY
    assert len(app.bodies) == calls + 1
    forwarded = app.bodies[-1]
    if forwarded != body:
        event("rewritten to ask for usage")
        assert asks_for_usage(body, forwarded)
        sent_lengths = [v for n, v in app.headers[-1] if n == b"content-length"]
        assert sent_lengths == ([] if length is None else [b"%d" % len(forwarded)])
