"""No request at all makes the demo (the model alone, or keylimit demo's whole server) answer 5xx:
refusals are 4xx in OpenAI's error shape. Bodies from Hypothesis: JSON with lone surrogates, numbers past
64 bits, NaN, nesting past the parser's limit, wrong types everywhere; corrupted and raw bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from keylimit import Config, Limits
from keylimit.auth._hashing import CHEAPEST
from keylimit.demo import MODEL_ID, demo_server_app

from ._hostile import assert_openai_answer, dumps, model_client

ROUTES = ["/models", f"/models/{MODEL_ID}", "/models/gpt-4o", "/chat/completions", "/completions", "/embeddings"]

ADMIN = "hostile-admin-token"
# The JSON text of `"\udcff"`: a lone surrogate, which is no Unicode text at all.
LONE = b'"\\udcff"'


# Text that may hold lone surrogates (written by json.dumps as `\udXXX` escapes) or be valid.
_text = st.text(max_size=12) | st.text(st.characters(categories=["Cs", "Lu", "Nd"]), min_size=1, max_size=4)
_number = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()  # NaN and infinities too: json.dumps writes them, no JSON parser should take them
)
_value = st.recursive(
    st.none() | st.booleans() | _number | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)


def _or_anything(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly a value of the right shape (so that the checks after the first are reached), else anything.
    return st.integers(0, 4).flatmap(lambda k: _value if k == 0 else valid)


_count = st.integers(min_value=-2, max_value=2**64 + 2) | st.integers(min_value=1, max_value=200)
_token_ids = st.lists(st.integers(min_value=-1, max_value=2**64 + 2), min_size=1, max_size=4)
_part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": _or_anything(_text)})
_message = st.fixed_dictionaries(
    {"role": _or_anything(st.sampled_from(["user", "system", "robot"]))},
    optional={"content": _or_anything(_text | st.lists(_part, max_size=2))},
)
_fields = {
    "messages": st.lists(_message, max_size=3),
    "prompt": _text | st.lists(_text, max_size=3) | _token_ids | st.lists(_token_ids, max_size=3),
    "input": _text | st.lists(_text, max_size=3) | _token_ids | st.lists(_token_ids, max_size=3),
    "max_tokens": _count,
    "max_completion_tokens": _count,
    "n": _count,
    "stop": _text | st.lists(_text, max_size=5),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": _or_anything(st.booleans())}),
    "dimensions": _count,
    "encoding_format": st.sampled_from(["float", "base64", "int8"]),
}
_object = st.fixed_dictionaries(
    {"model": _or_anything(st.just(MODEL_ID))},
    optional={**{name: _or_anything(value) for name, value in _fields.items()}, "\udcff": _value},
)
FIELDS = ["model", *_fields]


def _nested(field: str, depth: int, opener: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = (opener if opener == "[" else '{"a":') * depth + "1" + closer * depth
    return f'{{"model": "{MODEL_ID}", "{field}": {inner}}}'.encode()


def _corrupt(raw: bytes, at: int, byte: int) -> bytes:
    at %= len(raw) + 1
    return raw[:at] + bytes([byte]) + raw[at + 1 :]


_json_bodies = st.builds(dumps, _object | _value, st.booleans())
_bodies = st.one_of(
    _json_bodies,
    st.builds(_nested, st.sampled_from(FIELDS), st.integers(0, 1100), st.sampled_from(["[", "{"])),
    st.builds(_corrupt, _json_bodies, st.integers(0, 200), st.integers(0, 255)),
    st.binary(max_size=64),
    st.sampled_from([b"", b"null", b"[]", b"NaN", b"\xef\xbb\xbf{}", LONE, b'{"model": ' + LONE + b"}"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=st.sampled_from(ROUTES),
    body=_bodies,
)
def test_no_request_to_any_route_is_a_5xx(method: str, path: str, body: bytes) -> None:
    assert_openai_answer(model_client.request(method, path, content=body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/chat/completions", "/completions", "/embeddings"]), body=_object, ascii_only=st.booleans()
)
def test_no_object_posted_to_a_model_route_is_a_5xx(path: str, body: dict[str, Any], ascii_only: bool) -> None:
    assert_openai_answer(model_client.post(path, content=dumps(body, ascii_only)))


# --- keylimit demo's whole server


@pytest.fixture(scope="module")
def demo_server() -> Iterator[tuple[TestClient, str]]:
    """``keylimit demo``'s app (no limit on its plan, so that every request is read) and a key."""
    config = Config(
        keys_url="memory://",
        admin_token=ADMIN,
        argon2=CHEAPEST,
        plans={"open": Limits(10**9, 10**12, 10**12)},
        default_plan="open",
    )
    app = demo_server_app(config, token_delay=0)
    with TestClient(app, base_url="http://demo.test", raise_server_exceptions=False) as client:
        created = client.post(
            "/v1/accounts/demo/apiKeys", json={"name": "t"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert created.status_code == 201, created.text
        yield client, created.json()["key"]


SERVER_ROUTES = ["/", "/health", "/dashboard/keys", "/v1/accounts/demo", "/v1/accounts/demo/apiKeys"]
SERVER_ROUTES += ["/v1/accounts/demo/usage", "/v1/accounts/demo/apiKeys/key_x"]
SERVER_ROUTES += ["/inference/v1" + route for route in ROUTES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(SERVER_ROUTES),
    who=st.sampled_from(["key", "admin", "nobody"]),
    body=_bodies | st.builds(dumps, _object, st.booleans()),
)
def test_no_request_to_keylimit_demo_is_a_5xx(
    demo_server: tuple[TestClient, str], method: str, path: str, who: str, body: bytes
) -> None:
    client, key = demo_server
    token = {"key": key, "admin": ADMIN, "nobody": None}[who]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
