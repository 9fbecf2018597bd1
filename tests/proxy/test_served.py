"""``keylimit proxy`` as it runs: ``Protect`` over the proxy, served by uvicorn, in front of an upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from keylimit import Argon2Params, Config, Protect
from keylimit.proxy import proxy_app
from tests.proxy._servers import UPSTREAM_DATE, ServerThread

ADMIN = "proxy-admin-token"


@pytest.fixture(params=["h11", "httptools"])
def keylimit_proxy(request: pytest.FixtureRequest, upstream_url: str) -> Iterator[str]:
    """The URL of ``Protect(proxy_app(upstream))`` under uvicorn with each of its HTTP implementations."""
    config = Config(
        keys_url="memory://", argon2=Argon2Params(time_cost=1, memory_cost=8, parallelism=1), admin_token=ADMIN
    )
    server = ServerThread(Protect(proxy_app(upstream_url), config), http=request.param).start()
    yield server.url
    server.stop()


def test_one_date_and_one_server_header_the_servers_own(keylimit_proxy: str) -> None:
    with httpx.Client(base_url=keylimit_proxy, timeout=10) as http:
        created = http.post(
            "/v1/accounts/acct/apiKeys", json={"name": "proxy"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        # The upstream's uvicorn adds a Date and a Server of its own beside the route's.
        response = http.get("/stamped", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.text == "ok"
    [date] = response.headers.get_list("date")
    assert date != UPSTREAM_DATE.decode()
    assert response.headers.get_list("server") == ["uvicorn"]
