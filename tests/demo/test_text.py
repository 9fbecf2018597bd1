from __future__ import annotations

import pytest

from keylimit.demo import count_tokens
from keylimit.demo._text import embed, generate, split_tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # words
        ("", 0),
        ("hello", 1),
        ("hello world", 2),
        ("  spaced   out  ", 2),
        # punctuation runs are one token each
        ("Hello, world!", 4),
        ("wait...", 2),
        ("a+b=c", 5),
        # digits and underscores are word characters, as are letters of any script
        ("gpt_4o 2024", 2),
        ("déjà vu", 2),
        ("東京", 1),
    ],
)
def test_count_tokens(text: str, expected: int) -> None:
    assert count_tokens(text) == expected


@pytest.mark.parametrize("text", ["", "one", "Lorem ipsum. Dolor", "a, b ", "  lead", "x !? y\n"])
def test_split_tokens_gives_one_token_per_piece_and_the_text_back(text: str) -> None:
    pieces = split_tokens(text)
    if count_tokens(text):
        assert "".join(pieces) == text
    assert [count_tokens(p) for p in pieces] == [1] * count_tokens(text)


def test_generation_is_a_pure_function_of_prompt_and_choice() -> None:
    first = generate(b"prompt", 0, max_tokens=None)
    assert generate(b"prompt", 0, max_tokens=None) == first
    assert generate(b"prompt", 1, max_tokens=None).text != first.text
    assert generate(b"other prompt", 0, max_tokens=None).text != first.text
    assert first.finish_reason == "stop"
    assert first.text.endswith(".")
    assert first.tokens == count_tokens(first.text)


def test_max_tokens_cuts_a_prefix_and_reports_length() -> None:
    full = generate(b"prompt", 0, max_tokens=None)
    for limit in range(1, full.tokens):
        cut = generate(b"prompt", 0, max_tokens=limit)
        assert cut.tokens == limit
        assert full.text.startswith(cut.text)
        assert cut.finish_reason == "length"
    exact = generate(b"prompt", 0, max_tokens=full.tokens)
    assert (exact.text, exact.finish_reason) == (full.text, "stop")


def test_stop_cuts_before_the_first_stop_sequence() -> None:
    full = generate(b"prompt", 0, max_tokens=None).text
    second_word = full.split()[1]
    cut = generate(b"prompt", 0, max_tokens=None, stop=["zzz-never", second_word])
    assert cut.text == full[: full.index(second_word)]
    assert cut.finish_reason == "stop"
    assert cut.tokens == count_tokens(cut.text) == 1


def test_a_stop_sequence_beyond_max_tokens_does_not_count() -> None:
    full = generate(b"prompt", 0, max_tokens=None).text
    last_word = full.split()[-1].rstrip(".")
    cut = generate(b"prompt", 0, max_tokens=1, stop=[last_word])
    assert cut.finish_reason == "length"
    assert cut.tokens == 1


def test_embeddings_are_deterministic_unit_vectors() -> None:
    vector = embed(b"hello", 16)
    assert len(vector) == 16
    assert sum(x * x for x in vector) == pytest.approx(1.0)
    assert embed(b"hello", 16) == vector
    assert embed(b"hello!", 16) != vector
