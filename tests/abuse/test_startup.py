"""Issue 6, item 5: unreachable limit storage at start-up with policy ``closed`` fails the start,
naming the setting, with the URL's password redacted; a real uvicorn exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from keylimit import Config, ConfigurationError
from keylimit._types import Message
from tests._redis import free_port
from tests.e2e._process import CHEAP_ARGON2, Served
from tests.integration.conftest import lifespan

from ._apps import protected

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-redis-password"


def env(**settings: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYLIMIT_")}
    return {**base, **CHEAP_ARGON2, "PYTHONUNBUFFERED": "1", "KEYLIMIT_KEYS_URL": "memory://", **settings}


def closed_port_url() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there


UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "tests.abuse._apps:protected", "--port"]


def test_uvicorn_refuses_to_start_when_closed_policy_storage_is_down() -> None:
    url = closed_port_url()
    done = subprocess.run(
        [*UVICORN, str(free_port())],
        cwd=ROOT,
        env=env(KEYLIMIT_LIMITS_URL=url, KEYLIMIT_FAILURE_POLICY="closed"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(done.stderr)
    assert done.returncode != 0
    assert "KEYLIMIT_LIMITS_URL: the rate limit storage redis://***@127.0.0.1:" in done.stderr
    assert "KEYLIMIT_FAILURE_POLICY is closed" in done.stderr
    assert "Application startup failed. Exiting." in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_the_same_storage_down_with_policy_fallback_starts_and_serves(tmp_path: Path) -> None:
    served = Served(
        [*UVICORN, "{port}"],
        cwd=tmp_path,  # its output files go here; the app is imported from the repository
        env=env(KEYLIMIT_LIMITS_URL=closed_port_url(), KEYLIMIT_FAILURE_POLICY="fallback", PYTHONPATH=str(ROOT)),
        ready_path="/health",
    )
    try:
        assert httpx.get(served.url + "/health").text == "ok"
        assert httpx.get(served.url + "/whoami").status_code == 401
    finally:
        assert served.stop() == 0
    assert PASSWORD not in served.stderr + served.stdout


async def test_protect_lifespan_reports_startup_failed_without_starting_the_app() -> None:
    config = Config(keys_url="memory://", limits_url=closed_port_url(), failure_policy="closed")
    started: list[str] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        started.append(str(scope["type"]))

    protect = protected(config)
    protect.app = app  # type: ignore[assignment]  # only the lifespan is exercised here
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await protect({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    message = str(sent[0]["message"])
    assert message.startswith("KEYLIMIT_LIMITS_URL: the rate limit storage redis://***@127.0.0.1:")
    assert PASSWORD not in message
    assert started == []  # the app never saw a startup it could not finish


async def test_closed_policy_with_storage_up_starts(redis_url: str) -> None:
    protect = protected(Config(keys_url="memory://", limits_url=redis_url, failure_policy="closed"))
    async with lifespan(protect):
        pass


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_body_timeout_fails_naming_it(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^KEYLIMIT_BODY_TIMEOUT: must be a positive number"):
        Config.from_env({"KEYLIMIT_BODY_TIMEOUT": value, "KEYLIMIT_KEYS_URL": "memory://"})


def test_body_timeout_is_read_from_the_environment() -> None:
    assert Config.from_env({"KEYLIMIT_BODY_TIMEOUT": "2.5", "KEYLIMIT_KEYS_URL": "memory://"}).body_timeout == 2.5
    assert Config(keys_url="memory://").body_timeout == 30.0
