"""One ``keylimit.Protect`` driven in-process over raw ASGI, for thousands of generated cases.

Memory store and limits, the cheapest argon2, a manual clock that never moves (so the key
stays cached and windows never roll), limits too large to be reached and a failure throttle
too high to trip: whatever comes back is the layers' answer to the input alone. Every
``keylimit`` log record at ERROR or above is kept: a layer that swallowed an exception with
a traceback has still failed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from keylimit import Argon2Params, Config, Limits, ManualClock, Protect
from keylimit._types import ASGIApp, Message, Receive, Scope, Send
from keylimit.config._build import key_manager

CHEAP = Argon2Params(time_cost=1, memory_cost=8, parallelism=1)
ADMIN = "hostile-admin-session-token"
START = 1_700_000_040.0  # a minute boundary
HUGE = Limits(10**12, 10**15, 10**15)
ACCOUNT = "acct-hostile"

MISSING_KEY_BODY = {
    "error": {
        "message": (
            "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."
        ),
        "type": "invalid_request_error",
        "param": None,
        "code": "missing_api_key",
    }
}
INVALID_KEY_BODY = {
    "error": {
        "message": "Incorrect API key provided. Check the key, or create a new one.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset",
    "x-ratelimit-limit-prompt-tokens",
    "x-ratelimit-remaining-prompt-tokens",
    "x-ratelimit-limit-completion-tokens",
    "x-ratelimit-remaining-completion-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    more: list[bool] = field(default_factory=list)
    starts: int = 0

    def header(self, name: str) -> str | None:
        found = [v.decode("latin-1") for n, v in self.headers if n == name.encode()]
        assert len(found) <= 1, f"{name} appears {len(found)} times"
        return found[0] if found else None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def assert_openai_error(self) -> dict[str, Any]:
        """The body is OpenAI's error shape; returns its ``error`` object."""
        assert self.header("content-type") == "application/json"
        assert self.header("content-length") == str(len(self.body))
        body = self.json()
        assert set(body) == {"error"}
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert isinstance(error["code"], str)
        return dict(error)

    def assert_rate_limit_headers(self) -> None:
        for name in RATE_LIMIT_HEADERS:
            value = self.header(name)
            assert value is not None, f"no {name}"
        for name in RATE_LIMIT_HEADERS[:7]:
            assert self.header(name).isdigit(), f"{name}: {self.header(name)!r}"  # type: ignore[union-attr]


def hostile_config(**settings: Any) -> Config:
    """Memory storage, cheap argon2, the admin token, unreachable limits, no failure throttle."""
    defaults: dict[str, Any] = {
        "keys_url": "memory://",
        "argon2": CHEAP,
        "admin_token": ADMIN,
        "plans": {"free": HUGE},
        "auth_failures_per_minute": 10**9,
    }
    return Config(**{**defaults, **settings})


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """A Protect around ``app`` with one real key (``token``) of account ``ACCOUNT``."""

    def __init__(self, app: ASGIApp, **settings: Any) -> None:
        self.clock = ManualClock(START + 10)
        self.config = hostile_config(clock=self.clock, **settings)
        self.runner = asyncio.Runner()
        self.protect = Protect(app, self.config)
        self.errors = _ErrorLog()
        logging.getLogger("keylimit").addHandler(self.errors)
        record, self.token = self.runner.run(
            key_manager(self.config, self.protect.store).create_key(ACCOUNT, "hostile")
        )
        self.kid = record.kid

    def close(self) -> None:
        logging.getLogger("keylimit").removeHandler(self.errors)
        self.runner.run(self.protect.aclose())
        self.runner.close()

    def request(
        self,
        method: str = "POST",
        path: str = "/v1/chat/completions",
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
        chunks: Iterable[bytes] = (b"",),
        authorize: bool = True,
    ) -> Response:
        """One request; ``chunks`` are the body's pieces. No exception may escape the app."""
        head = [(b"host", b"hostile.test")]
        if authorize:
            head.append((b"authorization", b"Bearer " + self.token.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*head, *headers],
            "client": ("10.9.8.7", 50000),
            "server": ("hostile.test", 80),
        }
        parts = list(chunks) or [b""]
        incoming: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < len(parts) - 1} for i, c in enumerate(parts)
        ]
        response = Response()

        async def receive() -> Message:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.starts += 1
                response.status = message["status"]
                response.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                assert response.starts == 1, "body before the response started"
                response.chunks.append(message.get("body", b""))
                response.more.append(message.get("more_body", False))

        before = len(self.errors.records)
        self.runner.run(self.protect(scope, receive, send))
        logged = self.errors.records[before:]
        assert not logged, f"logged: {[r.getMessage() for r in logged]}"
        assert response.starts == 1, f"{response.starts} response starts"
        assert response.more, "no response body"
        assert response.more[-1] is False, "the response never ended"
        return response

    def remaining(self) -> tuple[int, int, int]:
        """The account's remaining requests, prompt and completion tokens (this costs one request)."""
        response = self.request("GET", "/v1/models")
        assert response.status == 200
        return (
            int(response.header("x-ratelimit-remaining-requests") or -1),
            int(response.header("x-ratelimit-remaining-prompt-tokens") or -1),
            int(response.header("x-ratelimit-remaining-completion-tokens") or -1),
        )


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


USAGE_REPLY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


class FixedApp:
    """Answers every HTTP request 200 with one fixed JSON body carrying usage; records bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[list[tuple[bytes, bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        self.headers.append(list(scope["headers"]))
        self.bodies.append(await read_body(receive))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(USAGE_REPLY))],
            }
        )
        await send({"type": "http.response.body", "body": USAGE_REPLY, "more_body": False})


@st.composite
def pieces(draw: st.DrawFn, data: bytes, most: int = 4) -> list[bytes]:
    """``data`` cut at up to ``most`` generated places (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=most)))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
