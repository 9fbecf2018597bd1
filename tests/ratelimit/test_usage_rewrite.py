"""Asking a stream for usage, and taking it out again, changes nothing else of what passes."""

from __future__ import annotations

import json

import pytest

from keylimit._taps import SSETap
from keylimit._tokens import EstimatingTokenCounter
from keylimit._usage import inspect_request

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
