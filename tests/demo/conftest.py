from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from keylimit.demo import demo_model_app

# A real uvicorn in a thread: the proxy tests' fixture, shared.
from tests.proxy.conftest import serve

__all__ = ["serve"]

BASE_URL = "http://demo.test/inference/v1"


def mounted_app() -> Starlette:
    # Mounted where `keylimit demo` serves it, so that every route is checked relative to its mount point.
    return Starlette(routes=[Mount("/inference/v1", demo_model_app())])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(mounted_app()), base_url=BASE_URL) as client:
        yield client


def sse_events(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of a Server-Sent Events body, JSON-decoded, with "[DONE]" kept as a string."""
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\n\n")
    events: list[Any] = []
    for block in response.text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
