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
def test_existing_options_are_kept_and_numbers_beyond_64_bits_stay_exact(options: str) -> None:
    raw = f'{{"messages":[],"stream":true,"stream_options":{options},"seed":{BIG},"n":-{BIG}}}'.encode()
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert request.strip_usage
    before, after = json.loads(raw), json.loads(request.body)
    assert after["seed"] == BIG
    assert after["n"] == -BIG
    assert after["stream_options"] == {**(before["stream_options"] or {}), "include_usage": True}
    assert {k: v for k, v in after.items() if k != "stream_options"} == {
        k: v for k, v in before.items() if k != "stream_options"
    }


def test_a_body_in_utf16_is_rewritten_as_json_all_the_same() -> None:
    raw = json.dumps({"messages": [], "stream": True, "x": BIG}).encode("utf-16")
    request = inspect_request(raw, COUNTER)
    assert request is not None
    assert json.loads(request.body) == {
        "messages": [],
        "stream": True,
        "x": BIG,
        "stream_options": {"include_usage": True},
    }


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
