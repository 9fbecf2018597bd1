"""The app the fault tests protect: one route that names the caller's account."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"account": request.user.account_id})


def app() -> Starlette:
    return Starlette(routes=[Route("/whoami", whoami)])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
