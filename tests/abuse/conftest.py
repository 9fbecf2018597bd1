from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keylimit._types import ASGIApp

from ._server import Server

Serve = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(app, **uvicorn options)`` → a started ``Server``; all stopped (lifespan shutdown) at the end."""
    servers: list[Server] = []

    def start(app: ASGIApp, **options: Any) -> Server:
        servers.append(Server(app, **options).start())
        return servers[-1]

    yield start
    for server in reversed(servers):
        server.stop()
