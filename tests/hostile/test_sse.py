"""Server-Sent Events from the app, generated: events cut anywhere, CRLF, junk JSON, huge
events, a missing ``[DONE]``, usage fields of wrong types and negative or huge token
counts, with the client asking for usage or not.

Asked (nothing to strip): the client gets exactly the app's bytes, chunk for chunk.
Not asked (keylimit asked for usage and strips it): only complete events, each the app's
own, without the usage-only event and without the ``usage`` field of the others; an
unfinished last event comes through as it was. Either way the account is charged a
non-negative amount, no more than the largest count reported or the text sent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from keylimit._types import Receive, Scope, Send
from keylimit.config._build import key_manager
from keylimit.http import _json
from keylimit.http._sse import MAX_EVENT_BYTES

from ._harness import Harness, pieces, read_body
from .conftest import CASES

ACCOUNTS = itertools.count()
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@dataclass
class StreamingApp:
    """Streams ``chunks`` (the last with ``more_body`` as ``last_more``) as text/event-stream."""

    chunks: list[bytes] = field(default_factory=list)
    content_type: bytes = b"text/event-stream"
    end_with_empty: bool = True
    requests: list[Any] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        body = await read_body(receive)
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        self.requests.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", self.content_type)]})
        chunks = [*self.chunks, b""] if self.end_with_empty or not self.chunks else self.chunks
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})


@pytest.fixture(scope="module")
def app() -> StreamingApp:
    return StreamingApp()


@pytest.fixture(scope="module")
def harness(app: StreamingApp) -> Iterator[Harness]:
    h = Harness(app)
    yield h
    h.close()


# --- what the app streams.

token_counts: st.SearchStrategy[Any] = (
    st.integers(-(10**6), 10**6)
    | st.sampled_from([0, 2**31, 2**53, 2**63, 10**18, 10**30, -(2**63)])
    | st.integers(100, 4200).map(lambda d: 10**d)
    | st.floats()
    | st.sampled_from(["5", "", None, True, False, [], {}, [5]])
)
usages = st.fixed_dictionaries(
    {},
    optional={"prompt_tokens": token_counts, "completion_tokens": token_counts, "total_tokens": token_counts},
) | st.sampled_from([None, "usage", 5, [], [{"completion_tokens": 5}]])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
texts = st.text(max_size=30)


def chunk_object(content: Any, usage: Any = ...) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": content}]}
    if usage is not ...:
        obj["usage"] = usage
    return obj


def data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode()


events = st.one_of(
    st.builds(lambda t: data(chunk_object({"content": t})), texts),
    st.builds(lambda t, u: data(chunk_object({"content": t}, u)), texts, usages),
    st.builds(lambda u: data({"id": "c1", "choices": [], "usage": u}), usages),
    st.builds(lambda t: data({"choices": [{"index": 0, "text": t}]}), texts),
    json_values.map(data),
    st.builds(lambda obj: data(obj), st.dictionaries(st.sampled_from(["usage", "choices", "id"]), json_values)),
    st.binary(max_size=60).map(lambda b: b"data: " + b.replace(b"\n", b"").replace(b"\r", b"")),
    st.sampled_from(
        [
            b": keep-alive",
            b"event: ping",
            b"id: 7\nretry: 10",
            b"data:[DONE]",
            b"data: [DONE]",
            b'data: {"choices": [],\ndata: "usage": {"completion_tokens": 3}}',
            b'event: chunk\nid: 1\ndata: {"choices": [{"delta": {"content": "x"}}], "usage": {"completion_tokens": 2}}',
            b"data: {",
            b"data",
            b"",
        ]
    ),
)
huge_events = st.integers(MAX_EVENT_BYTES - 64, MAX_EVENT_BYTES + 64).map(
    lambda n: data(chunk_object({"content": "y" * n}, {"completion_tokens": 9}))
)


@dataclass(frozen=True)
class Stream:
    events: list[bytes]
    newline: bytes
    finished: bool  # the last event has its blank line
    done: bool  # ends with data: [DONE]

    def raw(self) -> bytes:
        blank = self.newline * 2
        items = [*self.events, b"data: [DONE]"] if self.done else list(self.events)
        out = blank.join(e.replace(b"\n", self.newline) for e in items)
        return out + blank if (self.finished and items) else out


streams = st.builds(
    Stream,
    events=st.lists(events, max_size=12),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    finished=st.booleans(),
    done=st.booleans(),
)


@st.composite
def hostile_streams(draw: st.DrawFn) -> Stream:
    stream = draw(streams)
    if draw(st.integers(0, 11)) == 7:  # now and then, an event over the size the tap reads
        at = draw(st.integers(0, len(stream.events)))
        stream = Stream([*stream.events[:at], draw(huge_events), *stream.events[at:]], *_rest(stream))
    return stream


def _rest(stream: Stream) -> tuple[bytes, bool, bool]:
    return stream.newline, stream.finished, stream.done


# --- what the client should see when keylimit strips the usage it asked for.


def normalised(raw: bytes) -> bytes:
    while b"\r\n" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    return raw


def split_events(raw: bytes) -> tuple[list[bytes], bytes]:
    """Complete events (without their blank line) and the unfinished rest."""
    *complete, rest = normalised(raw).split(b"\n\n")
    return [e for e in complete if e], rest


def payload(event_: bytes) -> Any:
    lines = [line[5:].removeprefix(b" ") for line in event_.split(b"\n") if line.startswith(b"data:")]
    if not lines or lines[0] == b"[DONE]":
        return ...
    try:  # JSON is what keylimit's one parser reads as JSON
        return _json.loads(b"\n".join(lines))
    except ValueError:
        return ...


def stripped(event_: bytes) -> Any:
    """What the contract sends of ``event_``: None (dropped), the same bytes, or a JSON object without usage."""
    obj = payload(event_)
    if not isinstance(obj, dict) or "usage" not in obj:
        return event_
    if obj.get("choices") == []:
        return None
    return {k: v for k, v in obj.items() if k != "usage"}


def same_event(expected: Any, got: bytes) -> bool:
    if isinstance(expected, bytes):
        return expected == got
    obj = payload(got)
    return obj == expected or json.dumps(obj) == json.dumps(expected)  # NaN is not equal to itself


def reported_counts(raw: bytes) -> list[int]:
    """Every whole, non-negative token count any usage object in the stream reports."""
    found: list[int] = []
    for event_ in split_events(raw)[0]:
        obj = payload(event_)
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            for value in usage.values():
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    found.append(value)
    return found


@given(data_=st.data())
@CASES
def test_a_hostile_stream_reaches_the_client_well_formed(
    harness: Harness, app: StreamingApp, data_: st.DataObject
) -> None:
    # Every example on an account of its own, from the full limits: a stream may report any
    # usage, and what a response costs past the limits stays owed.
    harness.token = harness.runner.run(
        key_manager(harness.config, harness.protect.store).create_key(f"acct-sse-{next(ACCOUNTS)}", "sse")
    )[1]
    asks = data_.draw(st.booleans(), label="client asks for usage")
    stream = data_.draw(hostile_streams(), label="stream")
    raw = stream.raw()
    app.chunks = data_.draw(pieces(raw, most=8), label="chunks")
    app.end_with_empty = data_.draw(st.booleans(), label="ends with an empty chunk")
    huge = any(len(e) > MAX_EVENT_BYTES for e in stream.events)
    event(f"asks for usage: {asks}; huge event: {huge}")
    before = harness.remaining()
    body = {**CHAT, "stream_options": {"include_usage": True}} if asks else CHAT

    response = harness.request(chunks=[json.dumps(body).encode()], headers=[(b"content-type", b"application/json")])

    assert response.status == 200
    response.assert_rate_limit_headers()
    assert app.requests[-1]["stream_options"] == {"include_usage": True}
    if asks:
        assert response.chunks == [*app.chunks, b""] if app.end_with_empty or not app.chunks else app.chunks
        assert response.body == raw
    else:
        check_stripped(response.chunks, response.more, raw, huge)

    after = harness.remaining()
    prompt_charged = before[1] - after[1]
    completion_charged = before[2] - after[2]
    assert prompt_charged >= 0
    assert completion_charged >= 0
    bound = max([len(raw), 1, *reported_counts(raw)])
    assert completion_charged <= bound
    assert prompt_charged <= max([100, *reported_counts(raw)])


def check_stripped(chunks: list[bytes], more: list[bool], raw: bytes, huge: bool) -> None:
    out = b"".join(chunks)
    app_events, app_rest = split_events(raw)
    expected = [s for s in map(stripped, app_events) if s is not None]
    got, rest = split_events(out)
    if huge:
        # Past an event over the tap's size the rest goes on unread; the events before it
        # are stripped as usual, and the big one arrives whole.
        assert b"y" * (MAX_EVENT_BYTES - 64) in out
        return
    for i, chunk in enumerate(chunks):
        if more[i] and chunk:
            assert chunk.endswith(b"\n\n"), f"chunk {i} ends mid-event: {chunk[-20:]!r}"
    assert len(got) == len(expected), (got, expected)
    for want, have in zip(expected, got, strict=True):
        assert same_event(want, have), (want, have)
    assert rest == app_rest
