"""The default token estimate: shapes of OpenAI request bodies, and sane numbers."""

from __future__ import annotations

import pytest

from keylimit.ratelimit._tokens import (
    IMAGE_LOW_DETAIL_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_TOKENS,
    OTHER_PART_TOKENS,
    REPLY_TOKENS,
    EstimatingTokenCounter,
    TokenCounter,
)

COUNTER = EstimatingTokenCounter()
PROSE = (
    "Rate limits protect a shared inference service from any single client. Each account has a plan, "
    "and every request is counted against the plan's requests, prompt tokens and completion tokens per minute."
)
CODE = (
    'def handler(request):\n    if request.method != "POST":\n        return {"error": 405}\n    return run(request)\n'
)


def test_is_a_token_counter():
    assert isinstance(COUNTER, TokenCounter)


@pytest.mark.parametrize(
    ("text", "exact", "tolerance"),
    [
        # exact counts from OpenAI's cl100k_base tokenizer
        (PROSE, 37, 0.2),
        (CODE, 25, 0.25),
        ("What is the capital of France? Please answer in one sentence.", 13, 0.25),
        ("请用简单的语言解释一下什么是机器学习，以及它在日常生活中有哪些应用。", 38, 0.4),  # noqa: RUF001
    ],
)
def test_text_estimate_is_near_an_exact_count(text, exact, tolerance):
    assert abs(COUNTER.count_text(text) - exact) <= tolerance * exact


def test_text_estimate_grows_with_the_text():
    assert COUNTER.count_text("") == 0
    assert COUNTER.count_text("a") == 1
    assert COUNTER.count_text(PROSE * 10) >= 9 * COUNTER.count_text(PROSE)
    assert COUNTER.count_text("\ud800 lone surrogate") > 0  # JSON can carry one; never raises


def test_chat_body_counts_content_and_framing():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": PROSE, "name": "ann"},
        ],
    }
    expected = (
        REPLY_TOKENS
        + 2 * MESSAGE_TOKENS
        + COUNTER.count_text("You are terse.")
        + COUNTER.count_text(PROSE)
        + 1
        + COUNTER.count_text("ann")
    )
    assert COUNTER.count_prompt(body) == expected


def test_chat_content_parts_and_tools():
    parts = [
        {"type": "text", "text": PROSE},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert COUNTER.count_prompt(body) == (
        REPLY_TOKENS
        + MESSAGE_TOKENS
        + COUNTER.count_text(PROSE)
        + IMAGE_TOKENS
        + IMAGE_LOW_DETAIL_TOKENS
        + OTHER_PART_TOKENS
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert COUNTER.count_prompt({**body, "tools": tools}) > COUNTER.count_prompt(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # completions
        ({"prompt": PROSE}, COUNTER.count_text(PROSE)),
        ({"prompt": [PROSE, PROSE]}, 2 * COUNTER.count_text(PROSE)),
        ({"prompt": [1, 2, 3, 4]}, 4),  # token ids count exactly
        ({"prompt": [[1, 2], [3, 4, 5]]}, 5),
        # embeddings
        ({"input": "hello world"}, COUNTER.count_text("hello world")),
        ({"input": ["a b", "c d"]}, 2 * COUNTER.count_text("a b")),
        # wrong types count nothing for the part that is wrong
        ({"prompt": 5, "input": {"a": 1}, "messages": "hi"}, 0),
        ({"messages": [1, None, {"content": 7}]}, REPLY_TOKENS + MESSAGE_TOKENS),
        ({}, 0),
    ],
)
def test_prompt_shapes(body, expected):
    assert COUNTER.count_prompt(body) == expected
