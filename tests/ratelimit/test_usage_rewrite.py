"""Asking a stream for usage, and taking it out again, changes nothing else of what passes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keylimit.http._request import inspect_request
from keylimit.http._sse import SSETap
from keylimit.ratelimit._tokens import EstimatingTokenCounter

COUNTER = EstimatingTokenCounter()
BIG = 18446744073709551617  # past 64 bits


def test_a_stream_without_options_gets_the_member_added_and_every_other_byte_kept() -> None:
    raw = b'{ "model": "m",\n  "messages": [{"role": "user", "content": "caf\\u00e9"}], "stream": true }\n'
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert request.strip_usage
    assert request.body.startswith(raw.rstrip()[:-1])
    assert json.loads(request.body) == {**json.loads(raw), "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("options", ['{"continuous_usage_stats":false}', "null", '{"include_usage":false}'])
def test_existing_options_are_kept_when_usage_is_asked_for(options: str) -> None:
    raw = f'{{"messages":[],"stream":true,"stream_options":{options},"seed":12345678901234,"t":0.1}}'.encode()
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert request.strip_usage
    before, after = json.loads(raw), json.loads(request.body)
    assert after["stream_options"] == {**(before["stream_options"] or {}), "include_usage": True}
    assert {k: v for k, v in after.items() if k != "stream_options"} == {
        k: v for k, v in before.items() if k != "stream_options"
    }


@pytest.mark.parametrize("options", ['{"continuous_usage_stats":false}', "null"])
def test_a_body_that_cannot_be_written_again_exactly_is_forwarded_as_sent_and_not_asked(options: str) -> None:
    # An integer past 64 bits (which orjson reads as a float), or nesting too deep to write:
    # keylimit does not ask for usage then; the stream's text is counted instead.
    deep = "[" * 600 + "]" * 600
    for extra in (f'"seed":{BIG},"n":-{BIG}', f'"x":{deep}'):
        raw = f'{{"messages":[],"stream":true,"stream_options":{options},{extra}}}'.encode()
        request = inspect_request(raw, COUNTER)
        assert request is not None
        assert not request.strip_usage
        assert request.body is raw


def test_a_body_in_utf16_is_not_json_to_keylimit_and_is_charged_by_its_length() -> None:
    raw = json.dumps({"messages": [{"role": "user", "content": "hello " * 20}], "stream": True}).encode("utf-16")
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert request.body is raw
    assert not request.strip_usage
    assert request.prompt_tokens == COUNTER.count_text(raw.decode("utf-8", "replace"))


def test_a_body_that_asked_for_usage_itself_is_forwarded_untouched() -> None:
    raw = b'{"messages":[],"stream":true,"stream_options":{"include_usage":true},"x":18446744073709551617}'
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert not request.strip_usage
    assert request.body is raw


def test_stripping_usage_from_an_event_keeps_its_numbers_exact() -> None:
    event = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "seed": BIG, "usage": None}
    tap = SSETap(strip=True)
    out = tap.feed(b"data: " + json.dumps(event).encode() + b"\n\n", more=True)
    [data] = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert json.loads(data) == {k: v for k, v in event.items() if k != "usage"}


@pytest.mark.parametrize(
    "text",
    [
        b'{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}',
        b'{"id": "c", "usage": null, "choices": [{"delta": {"content": "say \\"usage\\": null"}}]}',
        b'{"usage" : null , "id":"c","choices":[{"delta":{"content":"x"}}]}',
        b'{"id":"c","choices":[{"delta":{"content":"x"}}],"usage":null,"seed":18446744073709551617}',
    ],
)
def test_a_null_usage_is_cut_out_of_the_event_text_and_nothing_else(text: bytes) -> None:
    tap = SSETap(strip=True)
    out = tap.feed(b"data: " + text + b"\n\n", more=True)
    [data] = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    expected = {k: v for k, v in json.loads(text).items() if k != "usage"}
    assert json.loads(data) == expected
    assert len(data) < len(text)
    assert b'"usage"' not in data


def test_a_nested_usage_key_leaves_the_rewrite_to_the_standard_library() -> None:
    text = b'{"id":"c","choices":[{"delta":{"content":"x"},"usage":null}],"usage":null}'
    tap = SSETap(strip=True)
    out = tap.feed(b"data: " + text + b"\n\n", more=True)
    [data] = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert json.loads(data) == {"id": "c", "choices": [{"delta": {"content": "x"}, "usage": None}]}


@pytest.mark.parametrize("depth", [990, 1_000, 1_020])
def test_an_event_too_deep_to_write_anew_is_passed_on_as_it_came(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    text = f'{{"choices":[{{"delta":{{"content":"x"}}}}],"x":{nested},"usage":{{"completion_tokens":3}}}}'
    event = b"data: " + text.encode() + b"\n\n"
    tap = SSETap(strip=True)
    out = tap.feed(event, more=True)
    assert tap.usage == {"completion_tokens": 3}
    assert out == event or b'"usage"' not in out


OPENAI_HEAD = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp"'
contents = st.text(max_size=12) | st.sampled_from(['say "usage":null}', "\\", "\n", "\u2028", "é"])


@st.composite
def openai_chunks(draw: st.DrawFn) -> bytes:
    """One event as OpenAI writes it when asked for usage, ``"usage":null`` last."""
    choices = draw(
        st.lists(
            st.builds(
                lambda i, c, reason: {"index": i, "delta": {"content": c}, "logprobs": None, "finish_reason": reason},
                st.integers(0, 3),
                contents,
                st.sampled_from([None, "stop"]),
            ),
            max_size=3,
        )
    )
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    text = json.dumps(choices, separators=separators, ensure_ascii=draw(st.booleans()))
    return f'data: {OPENAI_HEAD},"choices":{text},"usage":null}}\n\n'.encode()


@given(st.lists(openai_chunks(), min_size=1, max_size=6), st.data())
def test_a_whole_event_is_stripped_as_the_same_event_cut_in_pieces(chunks: list[bytes], data: st.DataObject) -> None:
    whole, pieces = SSETap(strip=True), SSETap(strip=True)
    out_whole = [whole.feed(chunk, more=True) for chunk in chunks]
    out_pieces = []
    for chunk in chunks:
        at = data.draw(st.integers(1, len(chunk) - 1))
        out_pieces += [pieces.feed(chunk[:at], more=True), pieces.feed(chunk[at:], more=True)]
        pieces.commit()
    whole.commit()
    assert [json.loads(o[6:]) for o in out_whole if o] == [json.loads(o[6:]) for o in out_pieces if o]
    assert whole.sent_text() == pieces.sent_text()
    assert all(b'"usage"' not in o for o in out_whole)
    for chunk, out in zip(chunks, out_whole, strict=True):
        expected = {k: v for k, v in json.loads(chunk[6:]).items() if k != "usage"}
        if expected["choices"]:
            assert json.loads(out[6:]) == expected


@given(st.lists(openai_chunks(), min_size=1, max_size=6), st.data())
def test_a_whole_event_the_client_asked_usage_for_is_read_as_the_same_event_cut_in_pieces(
    chunks: list[bytes], data: st.DataObject
) -> None:
    whole, pieces = SSETap(strip=False), SSETap(strip=False)
    for chunk in chunks:
        assert whole.feed(chunk, more=True) is chunk
        at = data.draw(st.integers(1, len(chunk) - 1))
        assert pieces.feed(chunk[:at], more=True) + pieces.feed(chunk[at:], more=True) == chunk
        whole.commit()
        pieces.commit()
    texts = [c["delta"]["content"] for chunk in chunks for c in json.loads(chunk[6:])["choices"]]
    assert whole.sent_text() == pieces.sent_text() == "".join(texts)
