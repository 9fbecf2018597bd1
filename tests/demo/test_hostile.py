"""No request at all makes the demo model answer 5xx: refusals are 4xx in OpenAI's error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from keylimit import Config, Limits
from keylimit._hashing import CHEAPEST
from keylimit._types import ASGIApp, Receive, Scope, Send
from keylimit.demo import MODEL_ID, demo_model_app, demo_server_app
from tests.proxy._servers import ServerThread

from .conftest import mounted_app

Serve = Callable[[ASGIApp], ServerThread]
ROUTES = ["/models", f"/models/{MODEL_ID}", "/models/gpt-4o", "/chat/completions", "/completions", "/embeddings"]

ADMIN = "hostile-admin-token"
# The JSON text of `"\udcff"`: a lone surrogate, which is no Unicode text at all.
LONE = b'"\\udcff"'


def assert_openai_answer(response: httpx2.Response) -> None:
    """Never 5xx; a refusal is exactly OpenAI's error object."""
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["code"], str)
    assert error["param"] is None or isinstance(error["param"], str)


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


def _dumps(value: object, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate becomes bytes that are not UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(field: str, depth: int, opener: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = (opener if opener == "[" else '{"a":') * depth + "1" + closer * depth
    return f'{{"model": "{MODEL_ID}", "{field}": {inner}}}'.encode()


def _corrupt(raw: bytes, at: int, byte: int) -> bytes:
    at %= len(raw) + 1
    return raw[:at] + bytes([byte]) + raw[at + 1 :]


_json_bodies = st.builds(_dumps, _object | _value, st.booleans())
_bodies = st.one_of(
    _json_bodies,
    st.builds(_nested, st.sampled_from(FIELDS), st.integers(0, 1100), st.sampled_from(["[", "{"])),
    st.builds(_corrupt, _json_bodies, st.integers(0, 200), st.integers(0, 255)),
    st.binary(max_size=64),
    st.sampled_from([b"", b"null", b"[]", b"NaN", b"\xef\xbb\xbf{}", LONE, b'{"model": ' + LONE + b"}"]),
)

_client = TestClient(mounted_app(), base_url="http://demo.test/inference/v1", raise_server_exceptions=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=st.sampled_from(ROUTES),
    body=_bodies,
)
def test_no_request_to_any_route_is_a_5xx(method: str, path: str, body: bytes) -> None:
    assert_openai_answer(_client.request(method, path, content=body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/chat/completions", "/completions", "/embeddings"]), body=_object, ascii_only=st.booleans()
)
def test_no_object_posted_to_a_model_route_is_a_5xx(path: str, body: dict[str, Any], ascii_only: bool) -> None:
    assert_openai_answer(_client.post(path, content=_dumps(body, ascii_only)))


CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "\udcff"}]}
COMPLETION = {"model": MODEL_ID, "prompt": ["fine", "\ud800 alone"]}
EMBEDDING = {"model": MODEL_ID, "input": "\udfff"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", CHAT),
        (
            "/chat/completions",
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udcff"}]}]},
        ),
        ("/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "ok"}], "stop": ["\udcff"]}),
        ("/chat/completions", {**CHAT, "model": "\udcff"}),
        ("/completions", COMPLETION),
        ("/embeddings", EMBEDDING),
        ("/embeddings", {**EMBEDDING, "input": ["a", "\udcff"]}),
    ],
)
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw-bytes"])
def test_a_lone_surrogate_is_a_400_invalid_json(path: str, body: dict[str, Any], ascii_only: bool) -> None:
    response = _client.post(path, content=_dumps(body, ascii_only))
    assert_openai_answer(response)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("invalid_json", None)


def test_a_surrogate_pair_is_one_character_and_is_served() -> None:
    response = _client.post(
        "/chat/completions", content=_dumps({**CHAT, "messages": [{"role": "user", "content": "😀"}]}, True)
    )
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 1


# --- through a real server and the official SDK


class Served:
    """An app under uvicorn, the key its clients send, and the client address of each inference request."""

    def __init__(self, serve: Serve, app: ASGIApp) -> None:
        self.peers: list[tuple[str, int]] = []

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/inference/"):
                self.peers.append(tuple(scope["client"]))
            await app(scope, receive, send)

        self.server = serve(recording)
        self.key = "unused"


@pytest.fixture(params=["model", "keylimit-demo"])
def served(request: pytest.FixtureRequest, serve: Serve) -> Served:
    """The demo model alone, or ``keylimit demo``'s whole server (behind Protect) with a key of its own."""
    if request.param == "model":
        return Served(serve, Starlette(routes=[Mount("/inference/v1", demo_model_app())]))
    config = Config(keys_url="memory://", admin_token=ADMIN, argon2=CHEAPEST)
    served = Served(serve, demo_server_app(config, token_delay=0))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = httpx.post(served.server.url + "/v1/accounts/demo/apiKeys", json={"name": "t"}, headers=admin)
    assert created.status_code == 201, created.text
    served.key = created.json()["key"]
    return served


@pytest.fixture
async def sdk(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    # One connection at most: every request after the first can only go on a kept-alive one.
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    http_client = httpx2.AsyncClient(limits=limits, timeout=10)
    base_url = served.server.url + "/inference/v1"
    async with openai.AsyncOpenAI(api_key=served.key, base_url=base_url, http_client=http_client, max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize(
    ("path", "body", "cast_to"),
    [
        ("/chat/completions", CHAT, ChatCompletion),
        ("/completions", COMPLETION, Completion),
        ("/embeddings", EMBEDDING, CreateEmbeddingResponse),
    ],
)
async def test_a_lone_surrogate_raises_bad_request_in_the_sdk_and_the_connection_lives_on(
    sdk: openai.AsyncOpenAI,
    served: Served,
    path: str,
    body: dict[str, Any],
    cast_to: type[Any],
) -> None:
    # The SDK writes JSON as UTF-8 and cannot encode a lone surrogate, so the request carries the
    # escaped JSON text a JavaScript client's JSON.stringify would send.
    options: Any = {"headers": {"Content-Type": "application/json"}}
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.post(path, cast_to=cast_to, content=_dumps(body, True), options=options)
    assert (bad.value.status_code, bad.value.code, bad.value.param) == (400, "invalid_json", None)
    completion = await sdk.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content
    assert len(served.peers) == 2
    assert served.peers[0] == served.peers[1]


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
    body=_bodies | st.builds(_dumps, _object, st.booleans()),
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
