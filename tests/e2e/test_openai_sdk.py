"""The official ``openai`` SDK against ``keylimit demo``'s app served by a real uvicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from keylimit import Config, KeyFormat, KeyType
from keylimit._types import ASGIApp, Receive, Scope, Send
from keylimit.demo import MODEL_ID, count_tokens, demo_server_app
from tests.e2e._process import CHEAP_ARGON2
from tests.proxy._servers import ServerThread

ADMIN = "e2e-admin-token"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, world!"}]
ATTEMPTS = 3  # a minute boundary can fall inside a measurement at most once in a row


class Demo:
    """The demo server and what a user does with it over HTTP."""

    def __init__(self, server: ServerThread) -> None:
        self.url = server.url
        self.base_url = server.url + "/inference/v1"
        self.admin = httpx.Client(base_url=server.url + "/v1/accounts", headers={"Authorization": f"Bearer {ADMIN}"})
        self.accounts = 0

    def new_key(self, plan: str | None = None) -> tuple[str, str]:
        """A key of a fresh account (on ``plan`` if given): (account id, key)."""
        self.accounts += 1
        account = f"acct-{self.accounts}"
        if plan is not None:
            assert self.admin.put(f"/{account}", json={"plan": plan}).status_code == 200
        created = self.admin.post(f"/{account}/apiKeys", json={"name": "e2e"})
        assert created.status_code == 201, created.text
        return account, created.json()["key"]

    def client(self, key: str, max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries)


class Counting:
    """Counts the HTTP requests that reach the server (in front of everything)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.seen = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen += 1
        await self.app(scope, receive, send)


def demo_config(tmp_path: Path, **env: str) -> Config:
    return Config.from_env(
        {
            **CHEAP_ARGON2,
            "KEYLIMIT_KEYS_URL": f"sqlite:///{tmp_path}/keys.db",
            "KEYLIMIT_ADMIN_TOKEN": ADMIN,
            **env,
        }
    )


@pytest.fixture
def demo(tmp_path: Path, serve: Callable[[ASGIApp], ServerThread]) -> Iterator[Demo]:
    demo = Demo(serve(demo_server_app(demo_config(tmp_path), token_delay=0)))
    yield demo
    demo.admin.close()


def remaining(response: Any) -> tuple[int, int, int]:
    headers = response.headers
    return (
        int(headers["x-ratelimit-remaining-requests"]),
        int(headers["x-ratelimit-remaining-prompt-tokens"]),
        int(headers["x-ratelimit-remaining-completion-tokens"]),
    )


# --- authentication


def test_no_key_is_401_missing_api_key(demo: Demo) -> None:
    # The SDK refuses an empty api_key before sending anything, so the request goes without it.
    with pytest.raises(openai.OpenAIError, match="api_key"):
        demo.client("")
    answer = httpx.post(demo.base_url + "/chat/completions", json={"model": MODEL_ID, "messages": HELLO})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("not-a-key", id="malformed"),
        pytest.param("forii_sk_" + "a" * 50, id="bad-checksum"),
        pytest.param(KeyFormat().generate(KeyType.SDK).token, id="unknown"),
    ],
)
def test_bad_keys_raise_authentication_error(demo: Demo, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        demo.client(key).chat.completions.create(model=MODEL_ID, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert key not in caught.value.message


def test_revoked_key_raises_authentication_error(demo: Demo) -> None:
    account, key = demo.new_key()
    client = demo.client(key)
    assert client.models.list().data[0].id == MODEL_ID
    [listed] = demo.admin.get(f"/{account}/apiKeys").json()["data"]
    assert demo.admin.delete(f"/{account}/apiKeys/{listed['id']}").json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.code == "invalid_api_key"


# --- rate limits


def test_the_61st_request_of_a_minute_on_the_free_plan_raises_rate_limit_error(demo: Demo) -> None:
    for _ in range(ATTEMPTS):
        _, key = demo.new_key()
        client = demo.client(key)
        answers = [client.models.with_raw_response.list() for _ in range(60)]
        with pytest.raises(openai.RateLimitError) as caught:
            client.models.list()
        resets = {a.headers["x-ratelimit-reset"] for a in answers} | {
            caught.value.response.headers["x-ratelimit-reset"]
        }
        if len(resets) == 1:
            break  # all 61 fell in one window: the measurement holds
    else:
        pytest.fail(f"a minute boundary fell inside each of {ATTEMPTS} attempts")
    assert [remaining(a)[0] for a in answers] == list(range(59, -1, -1))
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert int(error.response.headers["retry-after"]) >= 1
    assert int(error.response.headers["retry-after-ms"]) > 0


def test_the_sdk_retries_a_429_after_retry_after_ms_and_succeeds(
    tmp_path: Path, serve: Callable[[ASGIApp], ServerThread]
) -> None:
    config = demo_config(tmp_path, KEYLIMIT_WINDOW_SECONDS="1", KEYLIMIT_PLAN_TINY="1,100000,10000")
    counting = Counting(demo_server_app(config, token_delay=0))
    demo = Demo(serve(counting))
    _, key = demo.new_key(plan="tiny")
    client = demo.client(key, max_retries=2)
    first = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=HELLO)
    assert first.retries_taken == 0
    seen = counting.seen
    second = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=HELLO)
    assert second.http_response.status_code == 200
    assert second.retries_taken >= 1
    assert counting.seen - seen == 1 + second.retries_taken
    assert second.parse().choices[0].message.content
    demo.admin.close()


# --- streaming and usage


def test_stream_without_include_usage_shows_no_usage_and_is_charged(demo: Demo) -> None:
    _, key = demo.new_key()
    client = demo.client(key)
    for _ in range(ATTEMPTS):
        stream = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=HELLO, stream=True)
        chunks = list(stream.parse())
        after = client.models.with_raw_response.list()
        if stream.headers["x-ratelimit-reset"] == after.headers["x-ratelimit-reset"]:
            break
    else:
        pytest.fail(f"a minute boundary fell inside each of {ATTEMPTS} attempts")
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert text
    assert remaining(stream)[2] - remaining(after)[2] == count_tokens(text)


def test_stream_with_include_usage_ends_with_usage(demo: Demo) -> None:
    _, key = demo.new_key()
    chunks = list(
        demo.client(key).chat.completions.create(
            model=MODEL_ID, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(usages) == 1
    assert chunks[-1].usage is not None
    assert chunks[-1].choices == []
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert usages[0].completion_tokens == count_tokens(text)
    assert usages[0].prompt_tokens == count_tokens("Hello, world!")


def test_remaining_token_headers_fall_by_the_reported_usage(demo: Demo) -> None:
    for _ in range(ATTEMPTS):
        _, key = demo.new_key()
        client = demo.client(key)
        first = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=HELLO, max_tokens=7)
        second = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=HELLO, max_tokens=7)
        if first.headers["x-ratelimit-reset"] == second.headers["x-ratelimit-reset"]:
            break
    else:
        pytest.fail(f"a minute boundary fell inside each of {ATTEMPTS} attempts")
    usage = first.parse().usage
    assert usage is not None
    assert usage.completion_tokens == 7
    requests_1, prompt_1, completion_1 = remaining(first)
    requests_2, prompt_2, completion_2 = remaining(second)
    assert requests_1 - requests_2 == 1
    # Each request's headers count it as admitted (its prompt estimate, nothing yet completed);
    # by the second, the first is settled at its reported usage.
    assert prompt_1 - prompt_2 == usage.prompt_tokens
    assert completion_1 - completion_2 == usage.completion_tokens
