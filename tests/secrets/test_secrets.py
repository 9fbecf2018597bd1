"""Issue 6, item 4: no response, repr or exception holds key material; secret comparisons are
constant-time. (Logs are watched for every test of the suite by ``tests/conftest.py``.)"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from keylimit import (
    Config,
    KeyFormat,
    KeyRecord,
    Limits,
    ManualClock,
    ParsedKey,
    Principal,
    Protect,
    Scope,
    open_key_store,
    open_limit_backend,
)
from keylimit._errors import ConfigurationError
from keylimit._types import Message
from keylimit.auth._hashing import CHEAPEST, Hasher
from keylimit.backends.guarded import GuardedBackend
from keylimit.config._build import authenticator, key_manager
from keylimit.management import AdminTokenVerifier
from tests._redis import free_port
from tests.abuse._apps import inner_app
from tests.abuse._keys import forged
from tests.secrets._watch import SecretWatch

SRC = Path(__file__).resolve().parents[2] / "src" / "keylimit"
ADMIN = "secrets-admin-session-token"
PASSWORD = "redis-pass-w0rd-secret"
START = 1_700_000_040.0


def config(**settings: Any) -> Config:
    defaults: dict[str, Any] = {
        "keys_url": "memory://",
        "admin_token": ADMIN,
        "argon2": CHEAPEST,
        "plans": {"free": Limits(1000, 1_000_000, 1_000_000), "tiny": Limits(2, 20, 20)},
        "max_body_bytes": 4096,
    }
    return Config(**{**defaults, **settings})


def text_of(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{headers}\n\n{response.text}"


class Recorder:
    """Every response a test sees, by what was asked; keys made by create are allowed in their own answer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, httpx.Response, str | None]] = []

    def __call__(self, what: str, response: httpx.Response, allowed_key: str | None = None) -> httpx.Response:
        self.seen.append((what, response, allowed_key))
        return response

    def leaks(self, watch: SecretWatch) -> list[str]:
        found = []
        for what, response, allowed in self.seen:
            text = text_of(response)
            if allowed is not None:
                assert text.count(allowed) == 1, what  # the key, exactly once, in the create answer
                text = text.replace(allowed, "<the key created>")
            hit = watch.find(text)
            if hit is not None:
                found.append(f"{what}: {hit}")
        return found


def client(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(address, 1234)), base_url="http://test")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_no_response_but_create_holds_key_material(no_key_material_in_logs: SecretWatch) -> None:
    watch = no_key_material_in_logs
    clock = ManualClock(START)
    protect = Protect(inner_app(), config(clock=clock))
    seen = Recorder()
    admin = bearer(ADMIN)
    keys = "/v1/accounts/acct_1/apiKeys"
    try:
        async with client(protect) as http:

            async def create(account: str = "acct_1", **body: Any) -> dict[str, Any]:
                response = await http.post(f"/v1/accounts/{account}/apiKeys", json={"name": "k", **body}, headers=admin)
                created: dict[str, Any] = response.json()
                seen("create", response, created["key"])
                assert response.status_code == 201
                return created

            full = await create()
            read_only = await create(scopes=["read"])
            expiring = await create(expires_at=START + 10)
            revoked = await create()
            other = await create("acct_2")
            tiny = await create("acct_3")
            token = full["key"]

            # management: every endpoint, and its errors
            seen("list", await http.get(keys, headers=admin))
            seen("list by key", await http.get(keys, headers=bearer(token)))
            seen("account", await http.get("/v1/accounts/acct_1", headers=admin))
            seen("set plan", await http.put("/v1/accounts/acct_3", json={"plan": "tiny"}, headers=admin))
            seen("openapi", await http.get("/v1/accounts/openapi.json"))
            seen("revoke", await http.delete(f"{keys}/{revoked['id']}", headers=admin))
            seen("revoke again", await http.delete(f"{keys}/{revoked['id']}", headers=admin))
            seen("mgmt no auth", await http.get(keys))
            seen("mgmt bad admin", await http.get(keys, headers=bearer(ADMIN + "x")))
            seen("mgmt other account's key", await http.get(keys, headers=bearer(other["key"])))
            seen("mgmt read key", await http.post(keys, json={"name": "x"}, headers=bearer(read_only["key"])))
            seen(
                "mgmt plan by key", await http.put("/v1/accounts/acct_1", json={"plan": "free"}, headers=bearer(token))
            )
            seen("mgmt bad body", await http.post(keys, content=b"{not json", headers=admin))
            seen("mgmt bad field", await http.post(keys, json={"name": 3}, headers=admin))
            seen("mgmt unknown key", await http.delete(f"{keys}/key_AAAAAAAAAAAA", headers=admin))
            seen("mgmt too large", await http.post(keys, content=b"x" * 70_000, headers=admin))

            # the documented errors of the protected app
            seen("ok", await http.get("/whoami", headers=bearer(token)))
            seen("missing", await http.get("/whoami"))
            seen("wrong secret", await http.get("/whoami", headers=bearer(forged(token))))
            seen("malformed", await http.get("/whoami", headers=bearer(token[:-1])))
            seen(
                "token in a second header",
                await http.get("/whoami", headers=[*bearer(token).items(), *bearer(token).items()]),
            )
            seen("revoked", await http.get("/whoami", headers=bearer(revoked["key"])))
            seen("scope", await http.post("/echo", json={}, headers=bearer(read_only["key"])))
            seen("too large", await http.post("/echo", content=b" " * 5000, headers=bearer(token)))
            for _ in range(3):
                seen("requests 429", await http.get("/whoami", headers=bearer(tiny["key"])))
            clock.advance(60)
            seen("tokens 429", await http.post("/echo", json={"p": "word " * 200}, headers=bearer(tiny["key"])))
            seen("expired", await http.get("/whoami", headers=bearer(expiring["key"])))
        async with client(protect, "10.0.0.9") as attacker:
            for _ in range(31):
                last = await attacker.get("/whoami", headers=bearer(forged(token)))
            seen("wrong secrets flood", last)
        statuses = {what: response.status_code for what, response, _ in seen.seen}
        print("\n" + ", ".join(f"{what} {status}" for what, status in statuses.items()))
        assert statuses == {
            "create": 201, "list": 200, "list by key": 200, "account": 200, "set plan": 200, "openapi": 200,
            "revoke": 200, "revoke again": 200, "mgmt no auth": 401, "mgmt bad admin": 401,
            "mgmt other account's key": 404, "mgmt read key": 403, "mgmt plan by key": 403, "mgmt bad body": 400,
            "mgmt bad field": 400, "mgmt unknown key": 404, "mgmt too large": 413, "ok": 200, "missing": 401,
            "wrong secret": 401, "malformed": 401, "token in a second header": 401, "revoked": 401, "scope": 403,
            "too large": 413, "requests 429": 429, "tokens 429": 429, "expired": 401, "wrong secrets flood": 401,
        }  # fmt: skip
        assert seen.leaks(watch) == []
    finally:
        await protect.aclose()


async def test_408_and_503_hold_no_key_material(no_key_material_in_logs: SecretWatch) -> None:
    closed = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    protect = Protect(inner_app(), config(limits_url=closed, failure_policy="closed", body_timeout=0.05))
    try:
        _, token = await key_manager(protect.config, protect.store).create_key("acct_1", "k")
        async with client(protect) as http:
            unavailable = await http.get("/whoami", headers=bearer(token))
        assert unavailable.status_code == 503
        texts = [text_of(unavailable)]

        sent: list[Message] = []
        stalled = asyncio.Event()

        async def receive() -> Message:
            if not stalled.is_set():
                stalled.set()
                return {"type": "http.request", "body": b"{", "more_body": True}
            await asyncio.Event().wait()  # the client sends nothing more
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        # A limit storage that answers, for the 408.
        protect.limits = open_limit_backend("memory://", 60.0)
        protect.app.backend = protect.limits  # type: ignore[attr-defined]
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "scheme": "http",
            "http_version": "1.1",
            "asgi": {"version": "3.0"},
        }
        await protect(scope, receive, send)
        assert sent[0]["status"] == 408
        texts.append(repr(sent))
        for text in texts:
            assert no_key_material_in_logs.find(text) is None
            assert PASSWORD not in text
    finally:
        await protect.aclose()


# --- reprs


async def test_reprs_hold_no_secret(redis_url: str, tmp_path: Path) -> None:
    port = redis_url.split(":")[2].split("/")[0]
    with_password = f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    fmt = KeyFormat()
    parsed = fmt.generate()
    hashed = Hasher(CHEAPEST).hash(parsed.token)
    cfg = config(keys_url=with_password, limits_url=with_password)
    protect = Protect(inner_app(), cfg)
    store = open_key_store(with_password)
    sqlite = open_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    backend = open_limit_backend(with_password, 60.0)
    sentinel_like = open_limit_backend(f"redis+sentinel://:{PASSWORD}@127.0.0.1:{port}/mymaster", 60.0)
    record = KeyRecord(
        kid=parsed.kid,
        account_id="acct_1",
        name="k",
        key_type=parsed.key_type,
        scopes=(Scope.FULL,),
        hash=hashed,
        hint=fmt.hint(parsed.token, parsed.key_type, parsed.kid),
        created_at=START,
    )
    try:
        objects: dict[str, object] = {
            "Config": cfg,
            "Protect": protect,
            "Authenticator": protect.authenticator,
            "authenticator over its own store": authenticator(cfg),
            "RedisKeyStore": store,
            "SQLiteKeyStore": sqlite,
            "RedisBackend": backend,
            "GuardedBackend": GuardedBackend(backend, policy="closed"),
            "limits library backend": sentinel_like,
            "KeyRecord": record,
            "ParsedKey": parsed,
            "Principal": Principal(
                key_id=parsed.key_id,
                account_id="acct_1",
                key_type=parsed.key_type,
                scopes=frozenset(),
                plan="free",
                display_hint=record.hint,
            ),
            "AdminTokenVerifier": AdminTokenVerifier(ADMIN),
            "Hasher": Hasher(CHEAPEST),
            "KeyManager": key_manager(cfg, store),
        }
        secret_parts = [PASSWORD, ADMIN, parsed.token, parsed.token[-38:-6], hashed, hashed.split("$")[-1]]
        for name, obj in objects.items():
            text = repr(obj) + str(obj)
            found = [s for s in secret_parts if s in text]
            assert found == [], f"{name}: {text}"
        assert "***" in repr(cfg)
        assert "user:***@127.0.0.1" in repr(store) + repr(backend)
    finally:
        await protect.aclose()
        await store.aclose()
        await sqlite.aclose()
        await backend.aclose()
        await sentinel_like.aclose()


def test_configuration_errors_hold_no_secret() -> None:
    with pytest.raises(ConfigurationError) as bad_admin:
        Config(keys_url="memory://", admin_token=f"{ADMIN} with a space")
    with pytest.raises(ConfigurationError) as bad_url:
        Config(keys_url=f"mysql://root:{PASSWORD}@db/keys")
    with pytest.raises(ConfigurationError) as bad_limits:
        Config(keys_url="memory://", limits_url=f"nosuch://root:{PASSWORD}@db/")
    for info in (bad_admin, bad_url, bad_limits):
        assert ADMIN not in str(info.value)
        assert PASSWORD not in str(info.value)


# --- constant time

_SECRET_WORDS = re.compile(r"token|secret|hash|admin|password|digest", re.IGNORECASE)

# Every ==/!= in src/keylimit whose operands name a token, secret, hash or admin value, and why
# it need not be constant-time. A new one fails this test until it is reviewed and listed.
NOT_SECRET_COMPARISONS = {
    # The CRC is computed from the presented token itself: equal or not, the time tells the
    # sender nothing about any stored key (and the checksum is public by design).
    ("auth/_keys.py", "checksum(body) != token[-CRC_LEN:]"),
}
# Where secrets are compared: in constant time.
CONSTANT_TIME_SITES = {
    # The admin session token against KEYLIMIT_ADMIN_TOKEN.
    ("management/_app.py", "hmac.compare_digest(token.encode(), self._token)"),
    # A lapsed cache entry's hash against the store's, to skip argon2 when unchanged.
    ("auth/_authenticator.py", "hmac.compare_digest(known.hash, record.hash)"),
    # A token's check value against the stored one, before any argon2.
    ("auth/_hashing.py", "hmac.compare_digest(check, key_check(token))"),
}
# A key against its stored hash: argon2's own verify (argon2-cffi compares in constant time).
ARGON2_SITES = {("auth/_hashing.py", "self._ph.verify(hashed, token)")}


def _operand_names(node: ast.AST) -> str:
    return " ".join(
        n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)
    )


def _sites() -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
    comparisons, digests, argon2_calls = set(), set(), set()
    for path in sorted(SRC.rglob("*.py")):
        name = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                if _SECRET_WORDS.search(_operand_names(node)):
                    comparisons.add((name, ast.unparse(node)))
            elif isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func.endswith("compare_digest"):
                    digests.add((name, ast.unparse(node)))
                elif func == "self._ph.verify":
                    argon2_calls.add((name, ast.unparse(node)))
    return comparisons, digests, argon2_calls


def test_every_secret_comparison_is_constant_time() -> None:
    comparisons, digests, argon2_calls = _sites()
    assert comparisons == NOT_SECRET_COMPARISONS
    assert digests == CONSTANT_TIME_SITES
    assert argon2_calls == ARGON2_SITES


def test_the_scan_finds_a_plain_secret_comparison() -> None:
    tree = ast.parse("if supplied_token == self._admin_token: pass")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.Compare))
    assert _SECRET_WORDS.search(_operand_names(node))
    assert not _SECRET_WORDS.search(_operand_names(ast.parse("f.name == 'admin_token'").body[0].value))  # type: ignore[attr-defined]


def test_parsed_key_and_record_fields_stay_out_of_repr() -> None:
    parsed: ParsedKey = KeyFormat().generate()
    assert parsed.token not in repr(parsed)
