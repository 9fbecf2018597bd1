from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from keylimit import Config, Hasher, KeyFormat, KeyManager, ManualClock, Principal
from keylimit.auth._authenticator import Authenticator
from keylimit.auth._hashing import CHEAPEST
from keylimit.auth._keys import checksum
from keylimit.management import management_app, management_app_from_config
from keylimit.stores.memory import MemoryKeyStore
from keylimit.stores.sqlite import SQLiteKeyStore

ADMIN = "admin-session-token-0123456789"
BASE = "http://testserver"
Authenticate = Callable[[bytes | None, str | None], Awaitable[Principal]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_736_937_000.0)  # 2025-01-15T10:30:00Z


@pytest.fixture
def manager(clock: ManualClock) -> KeyManager:
    return KeyManager(MemoryKeyStore(), hasher=Hasher(CHEAPEST), clock=clock)


MakeAuth = Callable[..., Authenticate]


@pytest.fixture
async def make_auth() -> AsyncIterator[MakeAuth]:
    """The real Authenticator over a manager's store and settings; closed after the test."""
    made: list[Authenticator] = []

    def make(manager: KeyManager, **options: Any) -> Authenticate:
        authenticator = Authenticator(
            manager.store, key_format=manager.key_format, hasher=manager.hasher, clock=manager.clock, **options
        )
        made.append(authenticator)
        return authenticator.authenticate

    yield make
    for authenticator in made:
        await authenticator.aclose()


@pytest.fixture
async def client(manager: KeyManager, make_auth: MakeAuth) -> AsyncIterator[httpx.AsyncClient]:
    app = management_app(manager=manager, authenticate=make_auth(manager), admin_token=ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def keys_url(account: str) -> str:
    return f"/v1/accounts/{account}/apiKeys"


async def create(client: httpx.AsyncClient, account: str, token: str = ADMIN, **body: Any) -> dict[str, Any]:
    response = await client.post(keys_url(account), json={"name": "k", **body}, headers=bearer(token))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_error(response: httpx.Response, status: int, type_: str, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (type_, code, param)
    assert error["message"]


# --- the three endpoints of the reference


async def test_create_answers_the_reference_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(keys_url("acme"), json={"name": "prod-api"}, headers=bearer(ADMIN))
    assert response.status_code == 201
    body = response.json()
    assert list(body)[:3] == ["id", "name", "key"]
    assert body["id"].startswith("key_")
    assert body["name"] == "prod-api"
    assert body["key"].startswith("forii_sk_")
    assert body["created"] == "2025-01-15T10:30:00Z"
    assert body["status"] == "active"
    assert body["type"] == "sdk"
    assert body["scopes"] == ["full"]
    assert body["expires_at"] is None
    assert KeyFormat().parse(body["key"]) is not None
    assert not any(h.lower().startswith("x-ratelimit") for h in response.headers)


async def test_create_with_every_field(client: httpx.AsyncClient) -> None:
    body = await create(client, "acme", name="ci", type="api", scopes=["read", "inference"], expires_at=1_800_000_000)
    assert body["key"].startswith("forii_")
    assert not body["key"].startswith("forii_sk_")
    assert body["type"] == "api"
    assert body["scopes"] == ["inference", "read"]
    assert body["expires_at"] == "2027-01-15T08:00:00Z"
    iso = await create(client, "acme", expires_at="2030-01-01T00:00:00Z")
    assert iso["expires_at"] == "2030-01-01T00:00:00Z"
    naive = await create(client, "acme", expires_at="2030-01-01T00:00:00")
    assert naive["expires_at"] == "2030-01-01T00:00:00Z"
    offset = await create(client, "acme", expires_at="2030-01-01T01:00:00+01:00")
    assert offset["expires_at"] == "2030-01-01T00:00:00Z"
    numeric = await create(client, "acme", expires_at="1800000000")
    assert numeric["expires_at"] == "2027-01-15T08:00:00Z"


async def test_list_never_shows_a_key(client: httpx.AsyncClient, clock: ManualClock) -> None:
    first = await create(client, "acme", name="one")
    clock.advance(1)
    second = await create(client, "acme", name="two", type="api")
    await create(client, "globex", name="theirs")
    response = await client.get(keys_url("acme"), headers=bearer(ADMIN))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [k["id"] for k in body["data"]] == [first["id"], second["id"]]
    assert all("key" not in k for k in body["data"])
    for created in (first, second):
        secret_part = created["key"].rsplit("_", 1)[1]
        assert secret_part[:-4] not in response.text
        assert created["key"] not in response.text
    assert body["data"][0]["display"].startswith(f"forii_sk_{first['id'][4:]}")


async def test_revoke_is_idempotent(client: httpx.AsyncClient, clock: ManualClock) -> None:
    key_id = (await create(client, "acme"))["id"]
    url = f"{keys_url('acme')}/{key_id}"
    first = await client.delete(url, headers=bearer(ADMIN))
    assert first.status_code == 200
    assert first.json() == {"id": key_id, "status": "revoked"}
    clock.advance(60)
    again = await client.delete(url, headers=bearer(ADMIN))
    assert again.status_code == 200
    assert again.json() == {"id": key_id, "status": "revoked"}
    (listed,) = (await client.get(keys_url("acme"), headers=bearer(ADMIN))).json()["data"]
    assert listed["status"] == "revoked"
    assert listed["revoked_at"] == "2025-01-15T10:30:00Z"


@pytest.mark.parametrize("key_id", ["key_AAAAAAAAAAAA", "nonsense", "forii_sk_notakeyid"])
async def test_revoke_unknown_key_is_404(client: httpx.AsyncClient, key_id: str) -> None:
    response = await client.delete(f"{keys_url('acme')}/{key_id}", headers=bearer(ADMIN))
    assert_error(response, 404, "invalid_request_error", "not_found")
    assert key_id not in response.text


# --- who may manage what


async def test_full_api_key_manages_its_own_account(client: httpx.AsyncClient, clock: ManualClock) -> None:
    api_key = (await create(client, "acme", name="ops", type="api"))["key"]
    clock.advance(1)
    made = await create(client, "acme", token=api_key, name="made-by-key")
    listed = await client.get(keys_url("acme"), headers=bearer(api_key))
    assert listed.status_code == 200
    assert [k["name"] for k in listed.json()["data"]] == ["ops", "made-by-key"]
    revoked = await client.delete(f"{keys_url('acme')}/{made['id']}", headers=bearer(api_key))
    assert revoked.json() == {"id": made["id"], "status": "revoked"}


async def test_full_sdk_key_manages_its_own_account_too(client: httpx.AsyncClient) -> None:
    sdk_key = (await create(client, "acme"))["key"]
    assert (await client.get(keys_url("acme"), headers=bearer(sdk_key))).status_code == 200


async def test_another_accounts_keys_are_not_found(client: httpx.AsyncClient) -> None:
    acme_key = (await create(client, "acme", type="api"))["key"]
    globex = await create(client, "globex", name="globex-prod")
    for response in (
        await client.get(keys_url("globex"), headers=bearer(acme_key)),
        await client.post(keys_url("globex"), json={"name": "x"}, headers=bearer(acme_key)),
        await client.delete(f"{keys_url('globex')}/{globex['id']}", headers=bearer(acme_key)),
        await client.get("/v1/accounts/globex", headers=bearer(acme_key)),
    ):
        assert_error(response, 404, "invalid_request_error", "not_found")
        assert "globex-prod" not in response.text
    # Through its own account's path, the other account's key does not exist either.
    response = await client.delete(f"{keys_url('acme')}/{globex['id']}", headers=bearer(acme_key))
    assert_error(response, 404, "invalid_request_error", "not_found")
    (still,) = (await client.get(keys_url("globex"), headers=bearer(ADMIN))).json()["data"]
    assert still["status"] == "active"


@pytest.mark.parametrize("scopes", [["inference"], ["read"], ["inference", "read"]])
async def test_keys_without_full_scope_are_refused(client: httpx.AsyncClient, scopes: list[str]) -> None:
    token = (await create(client, "acme", scopes=scopes))["key"]
    for response in (
        await client.get(keys_url("acme"), headers=bearer(token)),
        await client.post(keys_url("acme"), json={"name": "x"}, headers=bearer(token)),
        await client.get("/v1/accounts/acme", headers=bearer(token)),
    ):
        assert_error(response, 403, "permission_error", "insufficient_scope")
    assert len((await client.get(keys_url("acme"), headers=bearer(ADMIN))).json()["data"]) == 1


async def test_revoked_key_can_no_longer_manage(client: httpx.AsyncClient) -> None:
    created = await create(client, "acme")
    await client.delete(f"{keys_url('acme')}/{created['id']}", headers=bearer(created["key"]))
    response = await client.get(keys_url("acme"), headers=bearer(created["key"]))
    assert_error(response, 401, "invalid_request_error", "invalid_api_key")


async def test_missing_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get(keys_url("acme"))
    assert_error(response, 401, "invalid_request_error", "missing_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {ADMIN}x",
        "Bearer wrong",
        f"Basic {ADMIN}",
        f"bearer {ADMIN[:-1]}",
        "Bearer forii_sk_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB000000",
    ],
)
async def test_wrong_session_token_is_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get(keys_url("acme"), headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert ADMIN not in response.text


async def test_session_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get(keys_url("acme"), headers={"Authorization": f"bearer {ADMIN}"})
    assert response.status_code == 200


async def test_without_an_admin_token_no_session_token_is_accepted(manager: KeyManager, make_auth: MakeAuth) -> None:
    app = management_app(manager=manager, authenticate=make_auth(manager))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        for token in ("", "None", ADMIN):
            response = await c.get(keys_url("acme"), headers=bearer(token))
            assert response.status_code == 401


class PerAccountSessions:
    """A session verifier told the account: each token manages one account."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def verify(self, token: str, account_id: str) -> bool:
        self.asked.append((token, account_id))
        return token == f"session-of-{account_id}"


async def test_pluggable_session_verifier(manager: KeyManager, make_auth: MakeAuth) -> None:
    verifier = PerAccountSessions()
    app = management_app(manager=manager, authenticate=make_auth(manager), session_verifier=verifier, admin_token=ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        assert (await c.get(keys_url("acme"), headers=bearer("session-of-acme"))).status_code == 200
        assert (await c.get(keys_url("globex"), headers=bearer("session-of-acme"))).status_code == 401
        # A verifier replaces the admin-token default.
        assert (await c.get(keys_url("acme"), headers=bearer(ADMIN))).status_code == 401
    assert verifier.asked[:2] == [("session-of-acme", "acme"), ("session-of-acme", "globex")]


# --- bad requests


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"name"', None),
        (b"\xff\xfe", None),
        (b"{}", "name"),
        (b'{"name": 5}', "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "   "}', "name"),
        (b'{"name": "' + b"x" * 129 + b'"}', "name"),
        (b'{"name": "a\\nb"}', "name"),
        (b'{"name": "k", "owner": "me"}', "owner"),
        (b'{"name": "k", "type": "root"}', "type"),
        (b'{"name": "k", "type": null}', "type"),
        (b'{"name": "k", "scopes": "full"}', "scopes"),
        (b'{"name": "k", "scopes": []}', "scopes"),
        (b'{"name": "k", "scopes": ["admin"]}', "scopes"),
        (b'{"name": "k", "scopes": [1]}', "scopes"),
        (b'{"name": "k", "expires_at": "tomorrow"}', "expires_at"),
        (b'{"name": "k", "expires_at": true}', "expires_at"),
        (b'{"name": "k", "expires_at": 1000}', "expires_at"),
        (b'{"name": "k", "expires_at": "2020-01-01T00:00:00Z"}', "expires_at"),
        (b'{"name": "k", "expires_at": 1e400}', None),  # past any double: not JSON to keylimit's parser
        (b'{"name": "k", "expires_at": [1]}', "expires_at"),
    ],
)
async def test_bad_create_bodies_are_400(client: httpx.AsyncClient, content: bytes, param: str | None) -> None:
    response = await client.post(
        keys_url("acme"), content=content, headers={**bearer(ADMIN), "content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error", "invalid_request", param)
    assert (await client.get(keys_url("acme"), headers=bearer(ADMIN))).json()["data"] == []


async def test_bad_account_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get(keys_url("bad%20account"), headers=bearer(ADMIN))
    assert_error(response, 400, "invalid_request_error", "invalid_request", "account_id")


async def test_body_over_the_cap_is_413(client: httpx.AsyncClient) -> None:
    big = json.dumps({"name": "k", "pad": "x" * 70_000}).encode()
    response = await client.post(keys_url("acme"), content=big, headers=bearer(ADMIN))
    assert_error(response, 413, "invalid_request_error", "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while read
        for _ in range(70):
            yield b" " * 1024

    response = await client.post(keys_url("acme"), content=chunks(), headers=bearer(ADMIN))
    assert_error(response, 413, "invalid_request_error", "request_too_large")


# --- accounts


async def test_account_plan_read_and_set(client: httpx.AsyncClient) -> None:
    token = (await create(client, "acme"))["key"]
    shown = await client.get("/v1/accounts/acme", headers=bearer(token))
    assert shown.json() == {
        "id": "acme",
        "object": "account",
        "plan": "free",
        "limits": {"requests": 60, "prompt_tokens": 100_000, "completion_tokens": 10_000},
        "custom_limits": False,
    }
    put = await client.put("/v1/accounts/acme", json={"plan": "pro"}, headers=bearer(ADMIN))
    assert put.status_code == 200
    assert put.json()["limits"] == {"requests": 6000, "prompt_tokens": 10_000_000, "completion_tokens": 1_000_000}
    custom = {"requests": 1, "prompt_tokens": 2, "completion_tokens": 3}
    put = await client.put("/v1/accounts/acme", json={"plan": "enterprise", "limits": custom}, headers=bearer(ADMIN))
    assert put.json()["plan"] == "enterprise"
    assert (await client.get("/v1/accounts/acme", headers=bearer(token))).json()["limits"] == custom


async def test_only_an_admin_session_sets_a_plan(client: httpx.AsyncClient) -> None:
    token = (await create(client, "acme"))["key"]
    response = await client.put("/v1/accounts/acme", json={"plan": "pro"}, headers=bearer(token))
    assert_error(response, 403, "permission_error", "insufficient_scope")
    assert (await client.get("/v1/accounts/acme", headers=bearer(ADMIN))).json()["plan"] == "free"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "plan"),
        ({"plan": "gold"}, "plan"),
        ({"plan": "enterprise"}, "limits"),
        ({"plan": "pro", "limits": {"requests": 1}}, "limits"),
        ({"plan": "pro", "limits": {"requests": -1, "prompt_tokens": 2, "completion_tokens": 3}}, "limits"),
        ({"plan": "pro", "limits": {"requests": 1.5, "prompt_tokens": 2, "completion_tokens": 3}}, "limits"),
        ({"plan": "pro", "limits": [1, 2, 3]}, "limits"),
        ({"plan": "pro", "seats": 3}, "seats"),
    ],
)
async def test_bad_plan_bodies_are_400(client: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    response = await client.put("/v1/accounts/acme", json=body, headers=bearer(ADMIN))
    assert_error(response, 400, "invalid_request_error", "invalid_request", param)


# --- the rest of the surface


async def test_openapi_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths["/v1/accounts/{account_id}/apiKeys"]) >= {"post", "get"}
    assert "delete" in paths["/v1/accounts/{account_id}/apiKeys/{key_id}"]
    assert set(paths["/v1/accounts/{account_id}"]) >= {"get", "put"}
    post = paths["/v1/accounts/{account_id}/apiKeys"]["post"]
    assert set(post["responses"]) >= {"201", "400", "401", "403", "404", "503"}
    # Failed authentications refuse no address, so no operation answers 429.
    operations = [op for item in paths.values() for op in item.values() if isinstance(op, dict)]
    assert len(operations) >= 5
    assert not [op for op in operations if "429" in op["responses"]]
    assert "error" in schema["components"]["schemas"]["Error"]["properties"]


async def test_unknown_paths_and_methods_answer_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/elsewhere"), 404, "invalid_request_error", "not_found")
    assert_error(
        await client.patch(keys_url("acme"), headers=bearer(ADMIN)), 405, "invalid_request_error", "method_not_allowed"
    )


async def test_key_store_down_is_503(tmp_path: Path, make_auth: MakeAuth) -> None:
    store = SQLiteKeyStore(tmp_path / "missing-dir" / "keys.db")
    manager = KeyManager(store, hasher=Hasher(CHEAPEST))
    app = management_app(manager=manager, authenticate=make_auth(manager), admin_token=ADMIN)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            for response in (
                await c.get(keys_url("acme"), headers=bearer(ADMIN)),
                await c.post(keys_url("acme"), json={"name": "k"}, headers=bearer(ADMIN)),
                # A key not in any cache cannot be checked: 503, never 401.
                await c.get(
                    keys_url("acme"),
                    headers=bearer(KeyFormat().generate().token),
                ),
            ):
                assert_error(response, 503, "server_error", "service_unavailable")
                assert response.headers["retry-after"] == "1"
    finally:
        await store.aclose()


async def test_mounted_under_a_prefix(manager: KeyManager, make_auth: MakeAuth) -> None:
    inner = management_app(manager=manager, authenticate=make_auth(manager), admin_token=ADMIN, path="")
    app = Starlette(routes=[Mount("/admin/accounts", app=inner)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        created = await c.post("/admin/accounts/acme/apiKeys", json={"name": "k"}, headers=bearer(ADMIN))
        assert created.status_code == 201
        listed = await c.get("/admin/accounts/acme/apiKeys", headers=bearer(ADMIN))
        assert [k["id"] for k in listed.json()["data"]] == [created.json()["id"]]
        assert (await c.get("/admin/accounts/openapi.json")).json()["paths"].keys() >= {"/{account_id}"}


# --- failed authentications lock nothing out


async def test_failed_authentications_never_lock_out_the_admin_token_or_a_key(
    manager: KeyManager, make_auth: MakeAuth
) -> None:
    _, cold = await manager.create_key("acme", "never used yet")
    kid = cold.split("_")[2]
    other_kid = KeyFormat().generate().token
    app = management_app(manager=manager, authenticate=make_auth(manager), admin_token=ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        wrong = ["wrong-session", ADMIN + "x", ADMIN[:-1], "", "forii_sk_nope", other_kid, cold[:-1] + "0"]
        wrong += [f"forii_sk_{kid}_{'A' * 32}{checksum(f'sk_{kid}_' + 'A' * 32)}"]  # a wrong secret for a real key
        for _ in range(20):
            for token in wrong:
                response = await c.get(keys_url("acme"), headers=bearer(token))
                assert response.status_code == 401
        assert_error(await c.get(keys_url("acme")), 401, "invalid_request_error", "missing_api_key")
        # From the very address that failed 160 times: the admin token and the key work.
        assert (await c.get(keys_url("acme"), headers=bearer(ADMIN))).status_code == 200
        assert (await c.get(keys_url("acme"), headers=bearer(cold))).status_code == 200


async def test_successful_sessions_are_not_failures(manager: KeyManager, make_auth: MakeAuth) -> None:
    app = management_app(manager=manager, authenticate=make_auth(manager), admin_token=ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        for _ in range(5):
            assert (await c.get(keys_url("acme"), headers=bearer(ADMIN))).status_code == 200


def test_management_app_from_config(tmp_path: Path) -> None:
    config = Config(
        keys_url=f"sqlite:///{tmp_path}/keys.db",
        admin_token=ADMIN,
        argon2=CHEAPEST,
        key_prefix="acme",
        management_path="/admin/accounts",
    )
    with TestClient(management_app_from_config(config)) as c:
        created = c.post("/admin/accounts/a1/apiKeys", json={"name": "k", "type": "api"}, headers=bearer(ADMIN))
        assert created.status_code == 201
        token = created.json()["key"]
        assert token.startswith("acme_")
        listed = c.get("/admin/accounts/a1/apiKeys", headers=bearer(token))
        assert listed.status_code == 200
        assert [k["id"] for k in listed.json()["data"]] == [created.json()["id"]]
        assert c.get("/v1/accounts/a1/apiKeys", headers=bearer(ADMIN)).status_code == 404
