"""The demo model's tokenizer, its deterministic text and its embeddings.

Tokenizer: a token is a run of word characters (``\\w+``) or a run of other
non-space characters (``[^\\w\\s]+``); whitespace is not a token. ``"Hello, world!"``
is four tokens. It counts prompts and completions alike, so ``usage`` always agrees
with the text.

Text: words of a fixed vocabulary chosen by BLAKE2b of the prompt, in one to five
sentences of four to twelve words. The same prompt always gives the same text, and
a shorter ``max_tokens`` gives a prefix of it.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]+")
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]+)")
_UNIT = 2.0**-63

_VOCABULARY = (  # noqa: SIM905
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip "
    "ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla "
    "pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim "
    "id est laborum"
).split()


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def split_tokens(text: str) -> list[str]:
    """Cut ``text`` into pieces of exactly one token each (with the spaces before it).

    Joined, the pieces give ``text`` back; trailing spaces stay on the last piece.
    """
    pieces = _PIECE.findall(text)
    rest = text[sum(map(len, pieces)) :]
    if pieces and rest:
        pieces[-1] += rest
    return pieces


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    finish_reason: str
    tokens: int


def generate(prompt: bytes, choice: int, *, max_tokens: int | None, stop: Sequence[str] = ()) -> Generation:
    """The text of choice ``choice`` for ``prompt``, cut by ``max_tokens`` and ``stop`` as OpenAI cuts it."""
    natural = _natural_tokens(hashlib.blake2b(prompt, digest_size=32, person=choice.to_bytes(16, "big")).digest())
    kept = natural if max_tokens is None else natural[:max_tokens]
    text = _join(kept)
    finish_reason = "length" if len(kept) < len(natural) else "stop"
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if cuts:
        text, finish_reason = text[: min(cuts)], "stop"
    return Generation(text=text, finish_reason=finish_reason, tokens=count_tokens(text))


def embed(data: bytes, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` components, a pure function of ``data``."""
    numbers = struct.unpack(f">{dimensions}Q", hashlib.shake_256(data).digest(8 * dimensions))
    vector = [n * _UNIT - 1.0 for n in numbers]
    scale = 1.0 / (math.hypot(*vector) or 1.0)
    return [x * scale for x in vector]


def _natural_tokens(seed: bytes) -> list[str]:
    numbers = _numbers(seed)
    tokens: list[str] = []
    for _ in range(1 + next(numbers) % 5):
        for position in range(4 + next(numbers) % 9):
            word = _VOCABULARY[next(numbers) % len(_VOCABULARY)]
            tokens.append(word.capitalize() if position == 0 else word)
        tokens.append(".")
    return tokens


def _join(tokens: list[str]) -> str:
    return "".join(t if i == 0 or t == "." else " " + t for i, t in enumerate(tokens))


def _numbers(seed: bytes) -> Iterator[int]:
    counter = 0
    while True:
        block = hashlib.blake2b(counter.to_bytes(8, "big"), key=seed, digest_size=64).digest()
        for i in range(0, 64, 8):
            yield int.from_bytes(block[i : i + 8], "big")
        counter += 1
