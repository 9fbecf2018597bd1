"""``keylimit demo``: the demo model on the reference's URL layout, behind both layers.

GET  /                              this index (open)
GET  /health                        open
*    /inference/v1/…                the demo model (models, chat/completions, completions, embeddings)
*    /v1/accounts/…                 key management (Protect serves it at ``management_path``)
GET  /v1/accounts/{id}/usage        an account's usage (read from the limits Protect charges)
GET  /dashboard/keys                the keys dashboard (sign in with the admin token)
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from .._models import KeyRecord, KeyStatus
from .._protect import Protect
from .._types import ASGIApp, Receive, Scope, Send
from ..config._build import key_manager
from ..config._config import Config
from ..management._app import management_app
from ..redis._url import redact_url
from ._app import _http_exception, demo_model_app
from ._requests import MODEL_ID

INFERENCE_PATH = "/inference/v1"
DEMO_ACCOUNT = "demo"
DEMO_KEY_NAME = "demo"
DEFAULT_TOKEN_DELAY = 0.02
DASHBOARD_PATH = "/dashboard/keys"


def demo_config(config: Config | None = None) -> Config:
    """``config`` (by default the environment's) with a session admin token if none is set."""
    config = config if config is not None else Config.from_env()
    if config.admin_token is not None:
        return config
    return dataclasses.replace(config, admin_token=secrets.token_urlsafe(24))


def demo_server_app(config: Config, *, token_delay: float = DEFAULT_TOKEN_DELAY) -> ASGIApp:
    """The demo server: ``GET /`` (an index, open), and the rest behind ``Protect``.

    ``/health`` is open because it is one of ``config.open_paths``; the index is answered
    before ``Protect`` rather than listed there, since open paths also cover what is below them.
    """
    management = config.management_path
    routes = {
        "GET /health": "open: is the server up",
        f"GET {INFERENCE_PATH}/models": "the demo model",
        f"POST {INFERENCE_PATH}/chat/completions": "chat, streaming and not (OpenAI's shape)",
        f"POST {INFERENCE_PATH}/completions": "legacy completions, streaming and not",
        f"POST {INFERENCE_PATH}/embeddings": "embeddings",
        f"POST {management}/{{account_id}}/apiKeys": "create a key (shown once)",
        f"GET {management}/{{account_id}}/apiKeys": "list keys",
        f"DELETE {management}/{{account_id}}/apiKeys/{{key_id}}": "revoke a key",
        f"GET {management}/{{account_id}}": "an account's plan and limits",
        f"GET {management}/{{account_id}}/usage": "an account's use of each limit in this window",
        f"PUT {management}/{{account_id}}": "set an account's plan (admin token only)",
        f"GET {DASHBOARD_PATH}": "the keys dashboard (open page; sign in with the admin token)",
    }
    index = JSONResponse(
        {
            "name": "keylimit demo",
            "model": MODEL_ID,
            "auth": "Authorization: Bearer <key>; every route but / and /health needs one",
            "routes": routes,
        }
    )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Mount(INFERENCE_PATH, demo_model_app(token_delay=token_delay)),
        ],
        exception_handlers={HTTPException: _http_exception},
    )
    protected = Protect(app, config)
    # The dashboard and the usage endpoint: a second management app over Protect's own
    # store, authenticator and limits, so that it sees what Protect charges.
    console = management_app(
        manager=key_manager(config, protected.store),
        authenticate=protected.authenticator.authenticate,
        admin_token=config.admin_token,
        path=management,
        limits=protected.limits,
        clock=config.clock,
        dashboard_path=DASHBOARD_PATH,
    )
    usage_prefix = management.rstrip("/") + "/"

    def for_console(path: str) -> bool:
        if path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/"):
            return True
        account, _, rest = path.removeprefix(usage_prefix).partition("/")
        return path.startswith(usage_prefix) and bool(account) and rest == "usage"

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            await index(scope, receive, send)
        elif scope["type"] == "http" and config.management and for_console(scope["path"]):
            await console(scope, receive, send)
        else:
            await protected(scope, receive, send)

    return server


@dataclass(frozen=True, slots=True)
class DemoKey:
    """The demo account's key: ``token`` only when it was created just now (it is never stored)."""

    record: KeyRecord
    token: str | None = dataclasses.field(default=None, repr=False)


async def ensure_demo_key(config: Config) -> DemoKey:
    """The demo account's active key, created (and its token returned, this once) if there is none."""
    manager = key_manager(config)
    try:
        for record in await manager.list_keys(DEMO_ACCOUNT):
            if record.status is KeyStatus.ACTIVE and not _expired(record, config):
                return DemoKey(record)
        record, token = await manager.create_key(DEMO_ACCOUNT, DEMO_KEY_NAME)
        return DemoKey(record, token)
    finally:
        await manager.store.aclose()


def _expired(record: KeyRecord, config: Config) -> bool:
    return record.expires_at is not None and record.expires_at <= config.clock()


def banner(key: DemoKey, config: Config, *, host: str, port: int, admin_token_generated: bool) -> str:
    """What ``keylimit demo`` prints before it serves."""
    url_host = f"[{host}]" if ":" in host else host
    base = f"http://{url_host}:{port}"
    lines = [f"keylimit demo: {base}/  (model {MODEL_ID!r}; key store {redact_url(config.keys_url)})", ""]
    if key.token is not None:
        lines += [
            f"Created account {DEMO_ACCOUNT!r} and its key. It is shown this once; keep it:",
            "",
            f"    export FORII_API_KEY={key.token}",
            "",
            "Try it:",
            "",
            f"    curl {base}{INFERENCE_PATH}/chat/completions \\",
            '      -H "Authorization: Bearer $FORII_API_KEY" -H "Content-Type: application/json" \\',
            f'      -d \'{{"model": "{MODEL_ID}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
            "",
            "Or with the OpenAI SDK (pip install openai):",
            "",
            "    import os, openai",
            f'    client = openai.OpenAI(base_url="{base}{INFERENCE_PATH}", api_key=os.environ["FORII_API_KEY"])',
            f'    print(client.chat.completions.create(model="{MODEL_ID}", '
            'messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)',
        ]
    else:
        lines += [
            f"Account {DEMO_ACCOUNT!r} already has a key ({key.record.hint}); it was shown when it was created.",
            "To make a new one (same store, works at once):",
            "",
            f"    keylimit keys create --account {DEMO_ACCOUNT} --name another",
        ]
    if admin_token_generated:
        lines += [
            "",
            "Admin token for this session only (KEYLIMIT_ADMIN_TOKEN was not set), for the management API:",
            "",
            f"    export KEYLIMIT_ADMIN_TOKEN={config.admin_token}",
            f"    curl {base}{config.management_path}/{DEMO_ACCOUNT}/apiKeys "
            '-H "Authorization: Bearer $KEYLIMIT_ADMIN_TOKEN"',
        ]
    if config.management:
        lines += ["", f"Keys dashboard: {base}{DASHBOARD_PATH}  (sign in with the admin token)"]
    lines += ["", "Ctrl-C stops the server.", ""]
    return "\n".join(lines)
