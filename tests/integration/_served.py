"""What ``test_http`` serves with uvicorn: the demo model behind ``Protect``, configured by KEYLIMIT_*."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from keylimit import Protect
from keylimit.demo import demo_model_app


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def app() -> Protect:
    """The factory uvicorn calls (``--factory``), so that importing this module reads no settings."""
    return Protect(Starlette(routes=[Route("/health", health), Mount("/inference/v1", demo_model_app())]))
