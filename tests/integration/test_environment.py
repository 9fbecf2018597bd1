"""``app.add_middleware(keylimit.Protect)`` with no arguments: configured by KEYLIMIT_* alone."""

from __future__ import annotations

import fastapi
import pytest
from starlette.requests import Request

import keylimit

from .conftest import assert_openai_error, bearer, cli, client, lifespan


def fastapi_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"account": request.user.account_id}

    app.add_middleware(keylimit.Protect)
    return app


async def test_protect_with_no_arguments_reads_the_environment(keylimit_env: dict[str, str]) -> None:
    token = cli(keylimit_env, "keys", "create", "--account", "acme", "--name", "from-the-cli")["key"]
    app = fastapi_app()

    async with lifespan(app), client(app) as c:
        missing = await c.get("/v1/whoami")
        answered = await c.get("/v1/whoami", headers=bearer(token))

    assert_openai_error(missing, 401, "invalid_request_error", "missing_api_key")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"account": "acme"}
    assert answered.headers["x-ratelimit-limit-requests"] == "60"  # the free plan, by default
    assert answered.headers["x-ratelimit-remaining-requests"] == "59"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYLIMIT_WINDOW_SECONDS", "-1"),
        ("KEYLIMIT_FAILURE_POLICY", "sometimes"),
        ("KEYLIMIT_KEYS_URL", "mongodb://localhost/keys"),
    ],
)
async def test_bad_settings_fail_at_start_naming_the_variable(
    keylimit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(keylimit.ConfigurationError, match=f"^{variable}"):
        keylimit.Protect(fastapi_app())
    # add_middleware builds the stack lazily: at the first lifespan, or the first request without one.
    with pytest.raises(keylimit.ConfigurationError, match=f"^{variable}"):
        async with lifespan(fastapi_app()):
            pass
    with pytest.raises(keylimit.ConfigurationError, match=f"^{variable}"):
        async with client(fastapi_app()) as c:
            await c.get("/v1/whoami")
