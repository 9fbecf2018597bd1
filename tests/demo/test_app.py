from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from typing import Any

import httpx
import pytest

from keylimit.demo import MODEL_ID, count_tokens, demo_model_app

from .conftest import sse_events

MODEL = {"id": MODEL_ID, "object": "model", "created": 1705312200, "owned_by": "keylimit"}


def chat(content: str = "Hello, world!", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **extra}


def usage_of(prompt_tokens: int, texts: list[str]) -> dict[str, int]:
    completion_tokens = sum(count_tokens(t) for t in texts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --- models ---


async def test_list_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [MODEL]}


@pytest.mark.parametrize("path", ["/models/keylimit/demo", "/models/keylimit%2Fdemo"])
async def test_get_model(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == MODEL


# --- chat completions ---


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL_ID
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    text = choice["message"]["content"]
    assert text
    # "Hello, world!" is four tokens: Hello , world !
    assert body["usage"] == usage_of(4, [text])


async def test_chat_is_deterministic(client: httpx.AsyncClient) -> None:
    first = (await client.post("/chat/completions", json=chat())).json()
    again = (await client.post("/chat/completions", json=chat())).json()
    other = (await client.post("/chat/completions", json=chat("Something else"))).json()
    assert first["choices"] == again["choices"]
    assert first["usage"] == again["usage"]
    assert other["choices"][0]["message"]["content"] != first["choices"][0]["message"]["content"]


async def test_chat_prompt_tokens_count_every_message_and_text_part(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi there"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None},
    ]
    response = await client.post("/chat/completions", json={"model": MODEL_ID, "messages": messages})
    assert response.status_code == 200
    # Be brief . | Hi there
    assert response.json()["usage"]["prompt_tokens"] == 5


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_chat_max_tokens_cuts_the_text_and_says_length(client: httpx.AsyncClient, field: str) -> None:
    full = (await client.post("/chat/completions", json=chat())).json()["choices"][0]["message"]["content"]
    response = await client.post("/chat/completions", json={**chat(), field: 3})
    body = response.json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length"
    text = choice["message"]["content"]
    assert count_tokens(text) == 3
    assert full.startswith(text)
    assert body["usage"] == usage_of(4, [text])


async def test_chat_max_tokens_above_the_natural_length_says_stop(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat(max_tokens=10_000))
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_chat_n_gives_distinct_choices_and_counts_all_of_them(client: httpx.AsyncClient) -> None:
    body = (await client.post("/chat/completions", json=chat(n=3, max_tokens=5))).json()
    texts = [c["message"]["content"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert body["usage"] == usage_of(4, texts) == {"prompt_tokens": 4, "completion_tokens": 15, "total_tokens": 19}


async def test_chat_stop_sequence(client: httpx.AsyncClient) -> None:
    full = (await client.post("/chat/completions", json=chat())).json()["choices"][0]["message"]["content"]
    body = (await client.post("/chat/completions", json=chat(stop=["."]))).json()
    text = body["choices"][0]["message"]["content"]
    assert text == full[: full.index(".")]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == usage_of(4, [text])


async def test_chat_stream_follows_openai_sse(client: httpx.AsyncClient) -> None:
    full = (await client.post("/chat/completions", json=chat())).json()["choices"][0]["message"]["content"]
    response = await client.post("/chat/completions", json=chat(stream=True))
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    # Without include_usage, no chunk carries a usage field at all.
    assert all("usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert deltas[-1] == {}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    contents = [d["content"] for d in deltas[1:-1]]
    assert all(count_tokens(c) == 1 for c in contents)
    assert "".join(contents) == full


async def test_chat_stream_with_include_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/chat/completions", json=chat(stream=True, max_tokens=4, stream_options={"include_usage": True})
    )
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert count_tokens(text) == 4
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == usage_of(4, [text])


async def test_chat_stream_include_usage_false_sends_no_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat(stream=True, stream_options={"include_usage": False}))
    chunks = sse_events(response)[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)


async def test_chat_stream_with_n_streams_every_choice(client: httpx.AsyncClient) -> None:
    plain = (await client.post("/chat/completions", json=chat(n=2))).json()
    response = await client.post("/chat/completions", json=chat(n=2, stream=True))
    texts = ["", ""]
    for chunk in sse_events(response)[:-1]:
        [choice] = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
    assert texts == [c["message"]["content"] for c in plain["choices"]]


# --- completions ---


async def test_completion_defaults_to_sixteen_tokens_like_openai(client: httpx.AsyncClient) -> None:
    body = (await client.post("/completions", json={"model": MODEL_ID, "prompt": "Say this is a test"})).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert count_tokens(choice["text"]) <= 16
    assert choice["finish_reason"] == ("length" if count_tokens(choice["text"]) == 16 else "stop")
    assert body["usage"] == usage_of(5, [choice["text"]])


async def test_completion_is_deterministic_and_honours_max_tokens(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 200}
    first = (await client.post("/completions", json=request)).json()
    again = (await client.post("/completions", json=request)).json()
    assert first["choices"] == again["choices"]
    full = first["choices"][0]["text"]
    cut = (await client.post("/completions", json={**request, "max_tokens": 2})).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert full.startswith(cut["choices"][0]["text"])
    assert cut["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


async def test_completion_many_prompts_and_token_arrays(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL_ID, "prompt": ["one two", [5, 6, 7]], "n": 2, "max_tokens": 3}
    body = (await client.post("/completions", json=request)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in body["choices"]]
    assert len(set(texts)) == 4
    # prompt tokens: two words, plus one per token id; counted once per prompt, not per choice
    assert body["usage"] == usage_of(2 + 3, texts)
    single = {"model": MODEL_ID, "prompt": [5, 6, 7], "max_tokens": 3}
    assert (await client.post("/completions", json=single)).json()["choices"][0]["text"] == texts[2]


async def test_completion_stream(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 6}
    plain = (await client.post("/completions", json=request)).json()
    response = await client.post(
        "/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert {c["object"] for c in events[:-1]} == {"text_completion"}
    assert all(c["usage"] is None for c in chunks)
    pieces = [c["choices"][0]["text"] for c in chunks[:-1]]
    assert all(count_tokens(p) == 1 for p in pieces)
    assert "".join(pieces) == plain["choices"][0]["text"]
    assert chunks[-1]["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain["usage"]


# --- embeddings ---


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


async def test_embeddings_of_one_string(client: httpx.AsyncClient) -> None:
    response = await client.post("/embeddings", json={"model": MODEL_ID, "input": "Hello, world!"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL_ID
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 16
    assert norm(item["embedding"]) == pytest.approx(1.0)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


async def test_embeddings_of_many_inputs_are_deterministic(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL_ID, "input": ["a b", "c", [1, 2, 3, 4]], "dimensions": 8}
    body = (await client.post("/embeddings", json=request)).json()
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and norm(v) == pytest.approx(1.0) for v in vectors)
    assert len({tuple(v) for v in vectors}) == 3
    assert body["usage"] == {"prompt_tokens": 2 + 1 + 4, "total_tokens": 7}
    again = (await client.post("/embeddings", json={**request, "input": "c"})).json()
    assert again["data"][0]["embedding"] == vectors[1]


async def test_embeddings_as_base64_decode_to_the_same_floats(client: httpx.AsyncClient) -> None:
    floats = (await client.post("/embeddings", json={"model": MODEL_ID, "input": "x"})).json()
    encoded = (
        await client.post("/embeddings", json={"model": MODEL_ID, "input": "x", "encoding_format": "base64"})
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


@pytest.mark.parametrize(("inputs", "dimensions"), [(16, 4096), (2048, 32)])
async def test_embeddings_up_to_65536_numbers_in_all_are_served(
    client: httpx.AsyncClient, inputs: int, dimensions: int
) -> None:
    request = {"model": MODEL_ID, "input": [f"text {i}" for i in range(inputs)], "dimensions": dimensions}
    body = (await client.post("/embeddings", json=request)).json()
    assert [len(d["embedding"]) for d in body["data"]] == [dimensions] * inputs


# --- token delay ---


async def test_token_delay_paces_a_stream_one_event_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    pauses: list[tuple[float, int]] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        # Record how long the app pauses and how many messages it had sent by then; do not wait.
        pauses.append((delay, len(sent)))
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    body = json.dumps(chat(stream=True, max_tokens=3)).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/chat/completions",
        "raw_path": b"/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("demo.test", 80),
    }
    await demo_model_app(token_delay=0.25)(scope, receive, send)

    events = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
    # role, three tokens, finish_reason, [DONE]: each event its own message, a pause after each chunk
    assert len(events) == 6
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert [delay for delay, _ in pauses] == [0.25] * 5
    assert [count for _, count in pauses] == [2, 3, 4, 5, 6]
