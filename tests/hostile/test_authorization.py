"""The ``Authorization`` header, generated: arbitrary bytes, huge values, near-miss keys and
several headers. Every answer is 200 for the real key alone, else 401 with one of the two
documented bodies; never a 500, never an exception out of Protect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from keylimit.auth._authenticator import MAX_HEADER
from keylimit.auth._keys import ALPHABET, CRC_LEN, checksum

from ._harness import INVALID_KEY_BODY, MISSING_KEY_BODY, USAGE_REPLY, FixedApp, Harness
from .conftest import CASES

PREFIX = "forii_"


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness(FixedApp())
    yield h
    h.close()


def with_checksum(token: str) -> str:
    """``token`` with its checksum made right again, so that it reaches the store and argon2."""
    body = token[len(PREFIX) : -CRC_LEN]
    return f"{PREFIX}{body}{checksum(body)}" if body.isascii() else token


@st.composite
def near_miss(draw: st.DrawFn, key: str) -> str:
    """The real key, mutated a little: a character changed, dropped, added, swapped or cased."""
    token = key
    for _ in range(draw(st.integers(1, 3))):
        if not token:
            break
        i = draw(st.integers(0, len(token) - 1))
        kind = draw(st.sampled_from(["replace", "delete", "insert", "swap", "case", "truncate", "append"]))
        char = draw(st.sampled_from(ALPHABET) | st.characters())
        if kind == "replace":
            token = token[:i] + char + token[i + 1 :]
        elif kind == "delete":
            token = token[:i] + token[i + 1 :]
        elif kind == "insert":
            token = token[:i] + char + token[i:]
        elif kind == "swap" and i + 1 < len(token):
            token = token[:i] + token[i + 1] + token[i] + token[i + 2 :]
        elif kind == "case":
            token = token[:i] + token[i].swapcase() + token[i + 1 :]
        elif kind == "truncate":
            token = token[:i]
        elif kind == "append":
            token = token + char
    if draw(st.booleans()) and len(token) > len(PREFIX) + CRC_LEN:
        token = with_checksum(token)
    return token


def encoded(token: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return token.map(lambda t: t.encode("utf-8", "surrogatepass"))


def header_values(key: str) -> st.SearchStrategy[bytes]:
    schemes = st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"BeArEr", b"Basic", b"Token", b"Bearer:", b""])
    separators = st.sampled_from([b" ", b"  ", b"\t", b"", b" \t", b"\xa0"])
    real = st.just(key.encode())
    tokens = (
        real
        | real
        | encoded(near_miss(key))
        | st.binary(max_size=80)
        | encoded(st.text(max_size=80))
        | st.sampled_from([b"", b" ", b"\x00", b"null", key.encode() * 2, key.upper().encode()])
    )
    padding = st.sampled_from([b"", b" ", b"\t", b"\r\n", b"\x00", b"\xff"])
    huge = st.tuples(st.binary(min_size=1, max_size=8), st.integers(32, 70_000)).map(lambda p: p[0] * p[1])
    return (
        st.just(b"Bearer " + key.encode())
        | st.tuples(padding, schemes, separators, tokens, padding).map(b"".join)
        | st.binary(max_size=300)
        | huge
        | st.tuples(st.just(b"Bearer "), huge).map(b"".join)
    )


def accepted(values: list[bytes], key: str) -> bool:
    """What the contract admits: exactly one header, ``Bearer`` (any case), one space, the key."""
    if len(values) != 1:
        return False
    scheme, _, token = values[0].partition(b" ")
    return scheme.lower() == b"bearer" and token == key.encode()


@given(data=st.data())
@CASES
def test_every_authorization_header_gets_a_documented_answer(harness: Harness, data: st.DataObject) -> None:
    key = harness.token
    one = header_values(key)
    values = data.draw(st.lists(one, min_size=1, max_size=1) | st.lists(one, max_size=3), label="authorization headers")
    headers = [(b"authorization", v) for v in values]
    response = harness.request("GET", "/v1/models", headers=headers, authorize=False)
    event(f"status {response.status}")
    if accepted(values, key):
        assert response.status == 200
        assert response.body == USAGE_REPLY
        response.assert_rate_limit_headers()
        return
    assert response.status == 401
    response.assert_openai_error()
    body = response.json()
    assert body in (MISSING_KEY_BODY, INVALID_KEY_BODY)
    assert response.header("www-authenticate") is not None
    if not values or (len(values) == 1 and not values[0].strip() and len(values[0]) <= MAX_HEADER):
        assert body == MISSING_KEY_BODY  # longer headers are refused unread, as invalid
    assert response.header("x-ratelimit-limit-requests") is None  # refused before the limiter


@given(data=st.data())
@CASES
def test_a_near_miss_of_the_real_key_is_refused(harness: Harness, data: st.DataObject) -> None:
    token = data.draw(near_miss(harness.token), label="token")
    headers = [(b"authorization", b"Bearer " + token.encode("utf-8", "surrogatepass"))]
    response = harness.request("GET", "/v1/models", headers=headers, authorize=False)
    event(f"status {response.status}")
    if token == harness.token:
        assert response.status == 200
        return
    assert response.status == 401
    assert response.json() in (MISSING_KEY_BODY, INVALID_KEY_BODY)
    event("checksum valid" if token == with_checksum(token) else "checksum wrong")
