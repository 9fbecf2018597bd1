"""OpenAI's response objects for the demo model: bodies, stream chunks and Server-Sent Events."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._requests import MODEL_ID, Sampling
from ._text import Generation, split_tokens

MODEL_CREATED = 1705312200
MODEL = {"id": MODEL_ID, "object": "model", "created": MODEL_CREATED, "owned_by": "keylimit"}

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Answer:
    """Every choice of one request, in index order, and the prompt tokens they answer."""

    choices: tuple[Generation, ...]
    prompt_tokens: int

    def usage(self) -> dict[str, int]:
        completion_tokens = sum(c.tokens for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }


def chat_completion(answer: Answer) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(answer.choices)
    ]
    return {**_head("chatcmpl", "chat.completion"), "choices": choices, "usage": answer.usage()}


def text_completion(answer: Answer) -> dict[str, Any]:
    choices = [
        {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
        for i, c in enumerate(answer.choices)
    ]
    return {**_head("cmpl", "text_completion"), "choices": choices, "usage": answer.usage()}


def chat_chunks(answer: Answer, sampling: Sampling) -> Iterator[dict[str, Any]]:
    """OpenAI's chunks: a role delta, one delta per token, a finish_reason delta, per choice."""
    head = _head("chatcmpl", "chat.completion.chunk")

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**head, "choices": [choice]}

    for i, c in enumerate(answer.choices):
        yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
        for piece in split_tokens(c.text):
            yield chunk(i, {"content": piece})
        yield chunk(i, {}, c.finish_reason)
    if sampling.include_usage:
        yield {**head, "choices": [], "usage": answer.usage()}


def completion_chunks(answer: Answer, sampling: Sampling) -> Iterator[dict[str, Any]]:
    head = _head("cmpl", "text_completion")

    def chunk(index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**head, "choices": [choice]}

    for i, c in enumerate(answer.choices):
        for piece in split_tokens(c.text):
            yield chunk(i, piece)
        yield chunk(i, "", c.finish_reason)
    if sampling.include_usage:
        yield {**head, "choices": [], "usage": answer.usage()}


def sse(chunk: dict[str, Any], include_usage: bool) -> bytes:
    # With include_usage, OpenAI puts "usage": null on every chunk but the last.
    if include_usage:
        chunk = {**chunk, "usage": chunk.get("usage")}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def embedding(index: int, vector: list[float], as_base64: bool) -> dict[str, Any]:
    value: list[float] | str = vector
    if as_base64:
        value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return {"object": "embedding", "index": index, "embedding": value}


def _head(prefix: str, object_: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": object_,
        "created": int(time.time()),
        "model": MODEL_ID,
        "system_fingerprint": "fp_keylimit_demo",
    }
