from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from keylimit.demo import MODEL_ID, count_tokens, demo_model_app

from .conftest import mounted_app

CHAT_URL = "/chat/completions"
USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": MODEL_ID, "messages": USER}
COMPLETION = {"model": MODEL_ID, "prompt": "hi"}
EMBEDDING = {"model": MODEL_ID, "input": "hi"}


def messages(*items: object) -> dict[str, Any]:
    return {**CHAT, "messages": list(items)}


def expect_error(response: httpx.Response, status: int, code: str, param: str | None) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        # not JSON, or not an object
        ("/chat/completions", b"{", "invalid_json", None),
        ("/chat/completions", b"", "invalid_json", None),
        ("/chat/completions", b"\xff\xfe\x00", "invalid_json", None),
        ("/chat/completions", b"[" * 100_000 + b"]" * 100_000, "invalid_json", None),
        ("/embeddings", b'{"max_tokens": 1' + b"0" * 5000 + b"}", "invalid_json", None),
        ("/completions", b"[1, 2]", "invalid_type", None),
        ("/embeddings", b'"text"', "invalid_type", None),
        # missing required parameters
        ("/chat/completions", {"messages": USER}, "missing_required_parameter", "model"),
        ("/chat/completions", {"model": MODEL_ID}, "missing_required_parameter", "messages"),
        ("/completions", {"model": MODEL_ID}, "missing_required_parameter", "prompt"),
        ("/embeddings", {"model": MODEL_ID, "input": None}, "missing_required_parameter", "input"),
        (CHAT_URL, messages({"content": "x"}), "missing_required_parameter", "messages[0].role"),
        # wrong types
        (CHAT_URL, {**CHAT, "model": 3}, "invalid_type", "model"),
        (CHAT_URL, {**CHAT, "messages": "hi"}, "invalid_type", "messages"),
        (CHAT_URL, messages("hi"), "invalid_type", "messages[0]"),
        (CHAT_URL, messages({"role": "user", "content": 5}), "invalid_type", "messages[0].content"),
        (CHAT_URL, messages({"role": "user", "content": [{"type": "text", "text": 1}]}),
         "invalid_type", "messages[0].content[0].text"),
        (CHAT_URL, {**CHAT, "max_tokens": "10"}, "invalid_type", "max_tokens"),
        (CHAT_URL, {**CHAT, "max_tokens": 10.5}, "invalid_type", "max_tokens"),
        (CHAT_URL, {**CHAT, "max_tokens": True}, "invalid_type", "max_tokens"),
        (CHAT_URL, {**CHAT, "stream": "yes"}, "invalid_type", "stream"),
        (CHAT_URL, {**CHAT, "stream": True, "stream_options": []}, "invalid_type", "stream_options"),
        (CHAT_URL, {**CHAT, "stream": True, "stream_options": {"include_usage": 1}},
         "invalid_type", "stream_options.include_usage"),
        ("/completions", {**COMPLETION, "prompt": 7}, "invalid_type", "prompt"),
        ("/completions", {**COMPLETION, "n": "2"}, "invalid_type", "n"),
        ("/embeddings", {**EMBEDDING, "dimensions": 1.0}, "invalid_type", "dimensions"),
        # values out of range
        (CHAT_URL, {**CHAT, "max_tokens": 0}, "integer_below_min_value", "max_tokens"),
        (CHAT_URL, {**CHAT, "max_completion_tokens": -5}, "integer_below_min_value", "max_completion_tokens"),
        ("/completions", {**COMPLETION, "max_tokens": 0}, "integer_below_min_value", "max_tokens"),
        (CHAT_URL, {**CHAT, "n": 0}, "integer_below_min_value", "n"),
        (CHAT_URL, {**CHAT, "n": 129}, "invalid_value", "n"),
        ("/completions", {**COMPLETION, "prompt": ["a"] * 65, "n": 2}, "invalid_value", "n"),
        ("/embeddings", {**EMBEDDING, "dimensions": 0}, "integer_below_min_value", "dimensions"),
        ("/embeddings", {**EMBEDDING, "dimensions": 10**6}, "invalid_value", "dimensions"),
        ("/embeddings", {**EMBEDDING, "input": ["x"] * 17, "dimensions": 4096}, "invalid_value", "dimensions"),
        ("/embeddings", {**EMBEDDING, "input": ["x"] * 2048, "dimensions": 33}, "invalid_value", "dimensions"),
        # invalid values
        (CHAT_URL, messages(), "invalid_value", "messages"),
        (CHAT_URL, messages({"role": "robot", "content": "x"}), "invalid_value", "messages[0].role"),
        (CHAT_URL, {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "invalid_value", "stop"),
        (CHAT_URL, {**CHAT, "stop": [1]}, "invalid_value", "stop"),
        ("/completions", {**COMPLETION, "prompt": []}, "invalid_value", "prompt"),
        ("/completions", {**COMPLETION, "prompt": [1, "a"]}, "invalid_value", "prompt[0]"),
        ("/completions", {**COMPLETION, "prompt": [[1, -2]]}, "invalid_value", "prompt[0]"),
        ("/embeddings", {**EMBEDDING, "input": []}, "invalid_value", "input"),
        ("/embeddings", {**EMBEDDING, "input": ["x"] * 2049}, "invalid_value", "input"),
        ("/embeddings", {**EMBEDDING, "encoding_format": "int8"}, "invalid_value", "encoding_format"),
    ],
)  # fmt: skip
async def test_bad_request_is_a_400_in_openai_shape(
    client: httpx.AsyncClient, path: str, body: bytes | dict[str, Any], code: str, param: str | None
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(path, content=content)
    expect_error(response, 400, code, param)


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/embeddings"])
async def test_unknown_model_is_a_404(client: httpx.AsyncClient, path: str) -> None:
    body = {**CHAT, **COMPLETION, **EMBEDDING, "model": "gpt-4o"}
    message = expect_error(await client.post(path, json=body), 404, "model_not_found", "model")
    assert "gpt-4o" in message


async def test_get_unknown_model_is_a_404(client: httpx.AsyncClient) -> None:
    expect_error(await client.get("/models/gpt-4o"), 404, "model_not_found", "model")


async def test_unknown_route_and_wrong_method_answer_in_openai_shape(client: httpx.AsyncClient) -> None:
    expect_error(await client.post("/responses", json={}), 404, "unknown_url", None)
    response = await client.get("/chat/completions")
    expect_error(response, 405, "method_not_allowed", None)
    assert response.headers["allow"] == "POST"


def test_negative_token_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="token_delay"):
        demo_model_app(token_delay=-1)


# Any JSON at all, and bodies whose fields are mostly of the right shape, so that hypothesis reaches deep.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Nine times in ten a value of the right shape, else any JSON.
    return st.integers(0, 9).flatmap(lambda k: _json if k == 9 else valid)


_message = st.fixed_dictionaries(
    {"role": _mostly(st.sampled_from(["user", "system", "assistant", "bot"]))},
    optional={
        "content": _mostly(
            st.text(max_size=30)
            | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": _mostly(st.text())}))
        ),
    },
)
_bodies = st.fixed_dictionaries(
    {
        "model": _mostly(st.just(MODEL_ID)),
        "messages": _mostly(st.lists(_message, min_size=1, max_size=3)),
        "prompt": _mostly(st.text(max_size=30) | st.lists(st.integers(min_value=-1, max_value=9), max_size=4)),
        "input": _mostly(st.text(max_size=30) | st.lists(st.text(max_size=5), max_size=3)),
    },
    optional={
        "max_tokens": _mostly(st.integers(min_value=-2, max_value=40)),
        "max_completion_tokens": _mostly(st.integers(min_value=-2, max_value=40)),
        "n": _mostly(st.integers(min_value=-1, max_value=3)),
        "stop": _mostly(st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=5)),
        "stream": _mostly(st.booleans()),
        "stream_options": _mostly(st.fixed_dictionaries({}, optional={"include_usage": _mostly(st.booleans())})),
        "dimensions": _mostly(st.integers(min_value=-1, max_value=40)),
        "encoding_format": _mostly(st.sampled_from(["float", "base64"])),
    },
)  # fmt: skip

_sync_client = TestClient(mounted_app(), base_url="http://demo.test/inference/v1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/chat/completions", "/completions", "/embeddings"]), body=_bodies | _json)
def test_no_body_is_ever_a_500(path: str, body: object) -> None:
    response = _sync_client.post(path, content=json.dumps(body).encode())
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n")
    elif path != "/embeddings":
        answer = response.json()
        texts = [c["message"]["content"] if "message" in c else c["text"] for c in answer["choices"]]
        assert answer["usage"]["completion_tokens"] == sum(count_tokens(t) for t in texts)
