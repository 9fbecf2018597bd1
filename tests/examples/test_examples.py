"""Each file in examples/ runs as it stands, and does what the README says it does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e._process import KEYLIMIT, Served, clean_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"


def create_key(env: dict[str, str], cwd: Path, account: str = "acme") -> str:
    done = subprocess.run(
        [*KEYLIMIT, "keys", "create", "--account", account, "--name", "dev"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["key"])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(KEYLIMIT_KEYS_URL=f"sqlite:///{tmp_path}/keylimit.db")


def serve_example(name: str, tmp_path: Path, env: dict[str, str]) -> Served:
    return Served([sys.executable, str(EXAMPLES / name), "{port}"], cwd=tmp_path, env=env)


def test_fastapi_app(tmp_path: Path, env: dict[str, str]) -> None:
    key = create_key(env, tmp_path)
    server = serve_example("fastapi_app.py", tmp_path, env)
    try:
        assert httpx.get(server.url + "/health").json() == {"status": "ok"}
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        refused = httpx.post(server.url + "/v1/chat/completions", json=body)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"
        answer = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Hello, acme!"
        assert answer.headers["x-ratelimit-limit-requests"] == "60"
        assert answer.headers["x-ratelimit-remaining-requests"] == "59"
    finally:
        assert server.stop() == 0


def test_starlette_app(tmp_path: Path, env: dict[str, str]) -> None:
    key = create_key(env, tmp_path)
    server = serve_example("starlette_app.py", tmp_path, env)
    try:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        answers = [httpx.get(server.url + "/v1/models", headers=auth) for _ in range(10)]
        assert answers[0].json()["data"][0]["owned_by"] == "acme"
        assert answers[0].headers["x-ratelimit-limit-requests"] == "10"  # the plan set in code
        assert [a.status_code for a in answers] == [200] * 10
        refused = httpx.get(server.url + "/v1/models", headers=auth)
        # A minute boundary during the ten can let an eleventh in, never let one of the ten out.
        if refused.status_code == 200:
            refused = httpx.get(server.url + "/v1/models", headers=auth)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        assert server.stop() == 0


def test_bare_asgi_app(tmp_path: Path, env: dict[str, str]) -> None:
    key = create_key(env, tmp_path)
    server = serve_example("bare_asgi_app.py", tmp_path, env)
    try:
        assert httpx.get(server.url + "/health").json() == {"path": "/health", "account": None}
        assert httpx.get(server.url + "/anything").status_code == 401
        answer = httpx.get(server.url + "/anything", headers={"Authorization": f"Bearer {key}"})
        assert answer.json() == {"path": "/anything", "account": "acme"}
        assert "x-ratelimit-reset" in answer.headers
    finally:
        assert server.stop() == 0


def test_openai_client_against_the_demo(tmp_path: Path) -> None:
    demo = Served([*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=clean_env())
    try:
        match = re.search(r"export FORII_API_KEY=(\S+)", demo.stdout)
        assert match is not None
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "openai_client.py"), demo.url + "/inference/v1"],
            env=clean_env(FORII_API_KEY=match.group(1)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        demo.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("answer: ")
    assert re.fullmatch(r"usage: \d+ prompt \+ 8 completion tokens", lines[1])
    assert lines[2] == "x-ratelimit-remaining-requests: 59"
    assert lines[3] == "x-ratelimit-remaining-completion-tokens: 10000"
    assert re.fullmatch(r"x-ratelimit-reset: \d{10}", lines[4])
    assert lines[5].startswith("stream: ")
    assert len(lines[5]) > len("stream: ")


def test_openai_client_with_a_bad_key_fails_with_authentication_error(tmp_path: Path) -> None:
    demo = Served([*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=clean_env())
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "openai_client.py"), demo.url + "/inference/v1"],
            env=clean_env(FORII_API_KEY="forii_sk_not_a_key"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        demo.stop()
    assert done.returncode == 1
    assert done.stderr.startswith("key refused: Error code: 401 - Incorrect API key provided.")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["fastapi_app.py", "starlette_app.py", "bare_asgi_app.py", "openai_client.py"])
def test_the_readme_quotes_each_example_exactly(name: str) -> None:
    assert (EXAMPLES / name).read_text() in README.read_text()


def test_the_readme_begins_with_the_two_commands_ci_runs() -> None:
    lines = README.read_text().splitlines()
    assert lines[0] == "# keylimit"
    start = lines.index("```bash")
    assert start <= 4  # the title, at most one sentence
    demo, tests, end = lines[start + 1 : start + 4]
    assert demo == "python3 -m venv .venv && .venv/bin/pip install -q -e '.[server]' && .venv/bin/keylimit demo"
    assert tests == "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"
    assert end == "```"
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_the_readme_lists_every_setting() -> None:
    from dataclasses import fields

    from keylimit import Config

    readme = README.read_text()
    names = [f.name for f in fields(Config) if f.name not in ("clock", "argon2")]
    names += ["argon2_time_cost", "argon2_memory_cost", "argon2_parallelism", "config"]
    missing = [f"KEYLIMIT_{n.upper()}" for n in names if f"| `KEYLIMIT_{n.upper()}` |" not in readme]
    assert missing == []
