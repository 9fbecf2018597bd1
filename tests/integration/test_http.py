"""A real server: uvicorn serving Protect in a subprocess, sharing its SQLite file with the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._redis import free_port

from .conftest import bearer, chat, cli

ROOT = Path(__file__).resolve().parents[2]
CACHE_TTL = 0.5
START_DEADLINE = 20.0


@pytest.fixture
def server(keylimit_env: dict[str, str], tmp_path: Path) -> Iterator[httpx.Client]:
    """uvicorn on a free loopback port, ready; killed whatever happens. Yields a client for it."""
    env = {**keylimit_env, "KEYLIMIT_CACHE_TTL": str(CACHE_TTL)}
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.integration._served:app"]
    command += ["--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            deadline = time.monotonic() + START_DEADLINE
            while True:
                assert proc.poll() is None, f"uvicorn exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"uvicorn not ready in {START_DEADLINE}s: {log.read_text()}"
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)  # polling, with a deadline
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_cli_key_works_at_once_on_a_running_server_and_stops_within_the_cache_ttl(
    server: httpx.Client, keylimit_env: dict[str, str]
) -> None:
    created = cli(keylimit_env, "keys", "create", "--account", "acme", "--name", "live")

    answer = server.post("/inference/v1/chat/completions", json=chat("Hello!"), headers=bearer(created["key"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] > 0
    assert answer.headers["x-ratelimit-remaining-requests"] == "59"

    cli(keylimit_env, "keys", "revoke", "--account", "acme", created["id"])
    # Through a shared SQLite file nothing tells the server: its cache entry lapses after
    # KEYLIMIT_CACHE_TTL, the documented worst case. (The margin is for a loaded machine.)
    deadline = time.monotonic() + CACHE_TTL + 1.0
    while (status := server.get("/inference/v1/models", headers=bearer(created["key"])).status_code) == 200:
        assert time.monotonic() < deadline, "the revoked key is still accepted after the cache TTL"
        time.sleep(0.02)
    assert status == 401
