"""The keys dashboard as served (page, assets, headers) and the usage endpoint it reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.testclient import TestClient

from keylimit import Config, ManualClock
from keylimit.auth._hashing import CHEAPEST
from keylimit.dashboard import asset, dashboard_app
from keylimit.demo import demo_server_app
from keylimit.demo._requests import MODEL_ID
from keylimit.demo._server import banner, ensure_demo_key
from keylimit.management import openapi_schema

ADMIN = "dashboard-admin-token"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ASSETS = ("index.html", "app.js", "style.css")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_010.0)


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(keys_url="memory://", admin_token=ADMIN, argon2=CHEAPEST, clock=clock)
    app = demo_server_app(config, token_delay=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://demo.test") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        # the page, with and without the trailing slash
        ("/dashboard/keys", "text/html; charset=utf-8"),
        ("/dashboard/keys/", "text/html; charset=utf-8"),
        # its two assets
        ("/dashboard/keys/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/keys/style.css", "text/css; charset=utf-8"),
    ],
)
async def test_page_and_assets_are_served_open_with_their_types(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


async def test_other_paths_under_the_dashboard_are_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard/keys/secrets.txt")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_page_points_at_its_assets_and_the_management_api(client: httpx.AsyncClient) -> None:
    page = (await client.get("/dashboard/keys")).text
    assert '<script src="/dashboard/keys/app.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/dashboard/keys/style.css">' in page
    assert '<meta name="keylimit-api" content="/v1/accounts">' in page
    assert "{{" not in page
    # Every form field has a label.
    for field in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', page):
        assert f'for="{field}"' in page, field


@pytest.mark.parametrize("name", ASSETS)
def test_assets_name_no_external_url(name: str) -> None:
    text = asset(name).decode()
    assert re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(", text, re.IGNORECASE) is None


@pytest.mark.parametrize("name", ASSETS)
def test_the_token_goes_nowhere_but_a_variable(name: str) -> None:
    text = asset(name).decode()
    for forbidden in ("localStorage", "sessionStorage", "document.cookie", "indexedDB", "location.", "history."):
        assert forbidden not in text, forbidden


def test_the_page_says_the_key_is_shown_once() -> None:
    assert "you will not see it again" in asset("index.html").decode()


def test_dashboard_app_fills_in_its_own_paths() -> None:
    with TestClient(dashboard_app("/ops/keys/", api_path="/api/accounts/")) as test:
        page = test.get("/ops/keys").text
        assert test.get("/ops/keys/app.js").status_code == 200
    assert 'src="/ops/keys/app.js"' in page
    assert 'content="/api/accounts"' in page


async def test_usage_rises_with_use_and_reading_it_charges_nothing(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/accounts/acme/apiKeys", json={"name": "k"}, headers=ADMIN_AUTH)
    key = created.json()["key"]
    before = (await client.get("/v1/accounts/acme/usage", headers=ADMIN_AUTH)).json()
    assert before["used"] == {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    assert (
        before["remaining"]
        == before["limits"]
        == {"requests": 60, "prompt_tokens": 100_000, "completion_tokens": 10_000}
    )
    assert before["plan"] == "free"
    assert before["reset_at"] == "2023-11-14T22:14:00Z"

    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hello"}]}
    answer = await client.post("/inference/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    usage = answer.json()["usage"]

    after = (await client.get("/v1/accounts/acme/usage", headers=ADMIN_AUTH)).json()
    again = (await client.get("/v1/accounts/acme/usage", headers=ADMIN_AUTH)).json()
    assert after == again
    assert after["used"] == {
        "requests": 1,
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
    }
    assert after["remaining"]["requests"] == 59
    assert after["known"] is True


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        # no token, a wrong one: 401 and no data
        (None, 401),
        ("Bearer not-the-admin-token", 401),
    ],
)
async def test_usage_needs_a_session(client: httpx.AsyncClient, authorization: str | None, status: int) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/v1/accounts/acme/usage", headers=headers)
    assert response.status_code == status
    assert set(response.json()) == {"error"}


async def test_usage_of_another_account_is_404_for_a_key(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/accounts/acme/apiKeys", json={"name": "k"}, headers=ADMIN_AUTH)
    other = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await client.get("/v1/accounts/acme/usage", headers=other)).status_code == 200
    response = await client.get("/v1/accounts/globex/usage", headers=other)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_openapi_documents_usage_only_when_served() -> None:
    assert "/v1/accounts/{account_id}/usage" not in openapi_schema("/v1/accounts")["paths"]
    schema = openapi_schema("/v1/accounts", usage=True)
    operation = schema["paths"]["/v1/accounts/{account_id}/usage"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Usage"
    }
    assert set(schema["components"]["schemas"]["Usage"]["properties"]) >= {"used", "remaining", "limits", "reset_at"}


async def test_demo_banner_names_the_dashboard() -> None:
    config = Config(keys_url="memory://", admin_token=ADMIN, argon2=CHEAPEST)
    text = banner(await ensure_demo_key(config), config, host="127.0.0.1", port=8123, admin_token_generated=False)
    assert "Keys dashboard: http://127.0.0.1:8123/dashboard/keys" in text
