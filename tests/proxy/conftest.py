from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from keylimit._types import ASGIApp
from tests.proxy._servers import ServerThread, Upstream


@pytest.fixture
def serve() -> Iterator[Callable[[ASGIApp], ServerThread]]:
    """Serve an ASGI app with a real uvicorn for the test; stopped (lifespan shutdown) afterwards."""
    servers: list[ServerThread] = []

    def start(app: ASGIApp) -> ServerThread:
        servers.append(ServerThread(app).start())
        return servers[-1]

    yield start
    for server in servers:
        server.server.should_exit = True
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def upstream(serve: Callable[[ASGIApp], ServerThread]) -> Iterator[Upstream]:
    # Depends on ``serve`` so that its gates open before the servers stop (no handler left waiting).
    app = Upstream()
    yield app
    app.release()


@pytest.fixture
def upstream_url(upstream: Upstream, serve: Callable[[ASGIApp], ServerThread]) -> str:
    return serve(upstream).url
