"""`keylimit demo` and `keylimit proxy` as a user runs them: a subprocess, its output, requests, Ctrl-C."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from keylimit._types import ASGIApp
from tests.e2e._process import KEYLIMIT, Served, clean_env
from tests.proxy._servers import ServerThread, Upstream

CHAT = {"model": "keylimit/demo", "messages": [{"role": "user", "content": "Hello"}]}
KEY_RE = re.compile(r"forii_sk_\w+")


def test_demo_first_start_prints_a_working_key_once_and_later_starts_do_not(tmp_path: Path) -> None:
    env = clean_env()  # the embedded defaults: sqlite:///keylimit.db in the working directory
    demo = Served([*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=env)
    try:
        out = demo.stdout
        [key] = set(KEY_RE.findall(out))
        assert out.count(key) == 1
        assert f"curl {demo.url}/inference/v1/chat/completions" in out
        assert f'openai.OpenAI(base_url="{demo.url}/inference/v1"' in out
        admin = re.search(r"export KEYLIMIT_ADMIN_TOKEN=(\S+)", out)
        assert admin is not None
        assert (tmp_path / "keylimit.db").exists()

        index = httpx.get(demo.url + "/")
        assert index.status_code == 200
        assert "POST /inference/v1/chat/completions" in index.json()["routes"]
        assert httpx.get(demo.url + "/health").json() == {"status": "ok"}

        assert httpx.post(demo.url + "/inference/v1/chat/completions", json=CHAT).status_code == 401
        answer = httpx.post(
            demo.url + "/inference/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
        assert answer.json()["usage"]["completion_tokens"] > 0
        assert answer.headers["x-ratelimit-limit-requests"] == "60"
        assert answer.headers["x-ratelimit-remaining-requests"] == "59"

        listed = httpx.get(
            demo.url + "/v1/accounts/demo/apiKeys", headers={"Authorization": f"Bearer {admin.group(1)}"}
        )
        assert listed.status_code == 200
        assert [k["name"] for k in listed.json()["data"]] == ["demo"]
        assert key not in listed.text
    finally:
        assert demo.stop() == 0

    again = Served([*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=env)
    try:
        out = again.stdout
        assert key not in out
        assert f"{key[:21]}…{key[-4:]}" in out  # the display hint: forii_sk_{kid}…{last4}
        assert "already has a key" in out
        assert "keylimit keys create --account demo" in out
        still = httpx.get(again.url + "/inference/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert still.status_code == 200
    finally:
        assert again.stop() == 0


def test_demo_with_an_admin_token_set_prints_none(tmp_path: Path) -> None:
    demo = Served(
        [*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=clean_env(KEYLIMIT_ADMIN_TOKEN="s3cret-admin")
    )
    try:
        assert "s3cret-admin" not in demo.stdout
        assert "KEYLIMIT_ADMIN_TOKEN=" not in demo.stdout
        listed = httpx.get(demo.url + "/v1/accounts/demo/apiKeys", headers={"Authorization": "Bearer s3cret-admin"})
        assert listed.status_code == 200
    finally:
        demo.stop()


def test_proxy_puts_keys_and_limits_in_front_of_an_upstream(
    tmp_path: Path, serve: Callable[[ASGIApp], ServerThread], upstream: Upstream
) -> None:
    upstream_url = serve(upstream).url
    env = clean_env(
        KEYLIMIT_KEYS_URL=f"sqlite:///{tmp_path}/keys.db",
        KEYLIMIT_ADMIN_TOKEN="admin-token",
        UPSTREAM_TOKEN="upstream-secret",
    )
    proxy = Served(
        [
            *KEYLIMIT,
            "proxy",
            "--upstream",
            upstream_url,
            "--port",
            "{port}",
            "--upstream-api-key-env",
            "UPSTREAM_TOKEN",
        ],
        cwd=tmp_path,
        env=env,
    )
    try:
        assert "upstream-secret" not in proxy.stdout + proxy.stderr
        created = httpx.post(
            proxy.url + "/v1/accounts/acme/apiKeys",
            json={"name": "ci"},
            headers={"Authorization": "Bearer admin-token"},
        )
        assert created.status_code == 201
        key = created.json()["key"]

        refused = httpx.post(proxy.url + "/v1/anything", json={"x": 1})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"

        answer = httpx.post(proxy.url + "/v1/anything?a=1", json={"x": 1}, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert answer.headers["x-upstream"] == "echo"
        assert answer.headers["x-ratelimit-remaining-requests"] == "59"
        seen = answer.json()
        assert (seen["method"], seen["raw_path"], seen["query_string"]) == ("POST", "/v1/anything", "a=1")
        authorization = [value for name, value in seen["headers"] if name == "authorization"]
        assert authorization == ["Bearer upstream-secret"]  # the client's key never reaches the upstream
    finally:
        assert proxy.stop() == 0


def test_proxy_to_an_unreachable_upstream_is_a_502_in_openai_shape(tmp_path: Path) -> None:
    env = clean_env(KEYLIMIT_KEYS_URL=f"sqlite:///{tmp_path}/keys.db", KEYLIMIT_ADMIN_TOKEN="admin-token")
    proxy = Served([*KEYLIMIT, "proxy", "--upstream", "http://127.0.0.1:9", "--port", "{port}"], cwd=tmp_path, env=env)
    try:
        created = httpx.post(
            proxy.url + "/v1/accounts/acme/apiKeys",
            json={"name": "ci"},
            headers={"Authorization": "Bearer admin-token"},
        )
        answer = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {created.json()['key']}"})
        assert answer.status_code == 502
        assert answer.json()["error"]["type"] == "server_error"
    finally:
        proxy.stop()
