"""A lone surrogate (``"\\udcff"`` in the JSON text) is no text: the demo answers 400 invalid_json,
never 500, and a kept-alive connection goes on serving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette
from starlette.routing import Mount

from keylimit import Config
from keylimit._types import ASGIApp, Receive, Scope, Send
from keylimit.auth._hashing import CHEAPEST
from keylimit.demo import MODEL_ID, demo_model_app, demo_server_app
from tests.proxy._servers import ServerThread

from ._hostile import assert_openai_answer, dumps, model_client

Serve = Callable[[ASGIApp], ServerThread]
ADMIN = "surrogates-admin-token"

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
    response = model_client.post(path, content=dumps(body, ascii_only))
    assert_openai_answer(response)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("invalid_json", None)


def test_a_surrogate_pair_is_one_character_and_is_served() -> None:
    response = model_client.post(
        "/chat/completions", content=dumps({**CHAT, "messages": [{"role": "user", "content": "😀"}]}, True)
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
        await sdk.post(path, cast_to=cast_to, content=dumps(body, True), options=options)
    assert (bad.value.status_code, bad.value.code, bad.value.param) == (400, "invalid_json", None)
    completion = await sdk.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content
    assert len(served.peers) == 2
    assert served.peers[0] == served.peers[1]
