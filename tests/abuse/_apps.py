"""What the abuse tests serve: a small app behind ``Protect``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from keylimit import Config, Protect


async def whoami(request: Request) -> Response:
    return JSONResponse({"account": request.user.account_id})


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"length": len(body)})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    return Starlette(
        routes=[Route("/whoami", whoami), Route("/echo", echo, methods=["POST"]), Route("/health", health)]
    )


def protected(config: Config | None = None) -> Protect:
    """``Protect`` over ``inner_app()``; with no config, from the environment (uvicorn ``--factory``)."""
    return Protect(inner_app(), config)
