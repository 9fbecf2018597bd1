"""Token counting: the ``TokenCounter`` seam and the default, dependency-free estimate.

The estimate works on the UTF-8 bytes of the text with C-speed operations only (one encode,
two ``bytes.translate`` deletions, two counts). Its weights per byte class were fitted
against OpenAI's ``cl100k_base`` tokenizer; ``python bench/token_error.py`` measures its
error against ``cl100k_base`` or ``o200k_base`` on texts found on the machine, and
``bench/README.md`` gives the figures: close for English prose and code, worse for other
languages (Latin-script ones are counted low, some other scripts high).

Plug in an exact tokenizer through the ``TokenCounter`` protocol when that matters; the
rate limiter corrects the prompt charge from the reported ``usage`` anyway.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

# Weights per UTF-8 byte class, fitted as described above.
_LETTER = 0.2  # ASCII letters and other bytes not below
_PUNCT_OR_DIGIT = 0.62
_WHITESPACE = 0.14  # spaces and newlines
_NON_ASCII = 0.33  # per byte of a multi-byte character (a CJK character is 3 bytes: ~1 token)

_PUNCT_OR_DIGIT_BYTES = (string.punctuation + string.digits).encode()
_NON_ASCII_BYTES = bytes(range(128, 256))

MESSAGE_TOKENS = 4
"""Chat framing per message (start, role, separator, end), as OpenAI's chat format spends."""
REPLY_TOKENS = 3
"""Chat framing that primes the assistant's reply, once per request."""
IMAGE_TOKENS = 765
"""An image part: what OpenAI charges for a 1024x1024 image at high detail."""
IMAGE_LOW_DETAIL_TOKENS = 85
"""An image part with ``"detail": "low"``."""
OTHER_PART_TOKENS = 1000
"""A content part that is neither text nor an image (audio, file): a fixed guess."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the prompt tokens of a request body and the tokens of a piece of text.

    ``count_prompt`` gets the parsed JSON body of an OpenAI-style chat completions,
    completions or embeddings request, which may be malformed in any way: it returns 0
    for what it does not understand and should never raise.
    """

    def count_prompt(self, body: Mapping[str, Any]) -> int: ...

    def count_text(self, text: str) -> int: ...


class EstimatingTokenCounter:
    """The default counter: an estimate from byte classes (see the module docstring)."""

    __slots__ = ()

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        raw = text.encode("utf-8", "replace")
        size = len(raw)
        non_ascii = 0 if text.isascii() else size - len(raw.translate(None, _NON_ASCII_BYTES))
        punct = size - len(raw.translate(None, _PUNCT_OR_DIGIT_BYTES))
        space = raw.count(b" ") + raw.count(b"\n")
        letters = size - non_ascii - punct - space
        return max(
            1, math.ceil(letters * _LETTER + punct * _PUNCT_OR_DIGIT + space * _WHITESPACE + non_ascii * _NON_ASCII)
        )

    def count_prompt(self, body: Mapping[str, Any]) -> int:
        total = 0
        messages = body.get("messages")
        if isinstance(messages, list):
            total = REPLY_TOKENS
            for message in messages:
                total += self._message(message)
            tools = body.get("tools", body.get("functions"))
            if isinstance(tools, list) and tools:
                total += self._json(tools)
        prompt = body.get("prompt")
        if prompt is not None:
            total += self._inputs(prompt)
        value = body.get("input")
        if value is not None:
            total += self._inputs(value)
        return total

    def __repr__(self) -> str:
        return "EstimatingTokenCounter()"

    def _message(self, message: object) -> int:
        if not isinstance(message, dict):
            return 0
        total = MESSAGE_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += self.count_text(content)
        elif isinstance(content, list):
            total += sum(self._part(p) for p in content)
        name = message.get("name")
        if isinstance(name, str):
            total += 1 + self.count_text(name)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list) and tool_calls:
            total += self._json(tool_calls)
        return total

    def _part(self, part: object) -> int:
        if isinstance(part, str):
            return self.count_text(part)
        if not isinstance(part, dict):
            return 0
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            text = part.get("text")
            return self.count_text(text) if isinstance(text, str) else 0
        if kind == "image_url" or kind == "image":
            image = part.get("image_url")
            low = isinstance(image, dict) and image.get("detail") == "low"
            return IMAGE_LOW_DETAIL_TOKENS if low else IMAGE_TOKENS
        return OTHER_PART_TOKENS

    def _inputs(self, value: object) -> int:
        """``prompt`` / ``input``: a string, a list of strings, token ids, or lists of token ids."""
        if isinstance(value, str):
            return self.count_text(value)
        if not isinstance(value, list):
            return 0
        total = 0
        for item in value:
            if isinstance(item, str):
                total += self.count_text(item)
            elif isinstance(item, int):
                total += 1
            elif isinstance(item, list):
                total += len(item)
        return total

    def _json(self, value: object) -> int:
        try:
            return self.count_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
        except (TypeError, ValueError, RecursionError):
            return 0
