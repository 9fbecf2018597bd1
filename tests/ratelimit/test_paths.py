"""Which paths the rate limiter leaves alone: the same rule as KeyAuthMiddleware's."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from keylimit import RateLimitMiddleware


async def ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.mark.parametrize(
    ("path", "limited"),
    [
        # open paths: exactly, not as prefixes
        ("/health", False),
        ("/health/deep", True),
        ("/healthz", True),
        # the management path: itself and below it
        ("/v1/accounts", False),
        ("/v1/accounts/acme/apiKeys", False),
        ("/v1/accountsx", True),
        # everything else
        ("/v1/models", True),
    ],
)
async def test_open_paths_match_exactly_and_management_as_a_prefix(path: str, limited: bool) -> None:
    app = Starlette(routes=[Route("/{rest:path}", ok)])
    limiter = RateLimitMiddleware(app, open_paths=("/health",), management_path="/v1/accounts")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(limiter), base_url="http://t") as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert ("x-ratelimit-limit-requests" in response.headers) is limited
