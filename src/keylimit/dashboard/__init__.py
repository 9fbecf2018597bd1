"""The keys dashboard: one static page (HTML, CSS, a little JavaScript) over the management API.

    GET {path}            the page
    GET {path}/app.js     its script
    GET {path}/style.css  its style sheet

The files ship inside the package (no build step, no CDN, works offline). The page talks
only to the management endpoints under ``api_path`` and keeps the session token in one
JavaScript variable: never in a URL, a cookie or web storage. Nothing here serves data;
the management app authorises every request the page makes.
"""

from __future__ import annotations

import html
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_PATH = "/dashboard/keys"

_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page may load only its own files and call only its own origin; no framing, no referrer.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def asset(name: str) -> bytes:
    """One of the dashboard's files, read from the installed package."""
    return resources.files(__package__).joinpath(name).read_bytes()


def render_page(path: str, api_path: str) -> bytes:
    """``index.html`` with the dashboard's own path and the management API's path filled in."""
    page = asset("index.html").decode()
    page = page.replace("{{path}}", html.escape(path, quote=True))
    return page.replace("{{api_path}}", html.escape(api_path, quote=True)).encode()


def dashboard_routes(path: str = DEFAULT_PATH, *, api_path: str = "/v1/accounts") -> list[Route]:
    """The page at ``path`` (and ``path/``) and its two assets, for a Starlette app's routes."""
    path = "/" + path.strip("/")
    page = render_page(path, api_path.rstrip("/"))
    files = {name: asset(name) for name in _TYPES}

    async def index(request: Request) -> Response:
        return Response(page, headers=_HEADERS, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[-1]
        return Response(files[name], headers=_HEADERS, media_type=_TYPES[name])

    return [
        Route(path, index, methods=["GET"]),
        Route(f"{path}/", index, methods=["GET"]),
        *(Route(f"{path}/{name}", static, methods=["GET"]) for name in _TYPES),
    ]


def dashboard_app(path: str = DEFAULT_PATH, *, api_path: str = "/v1/accounts") -> Starlette:
    """The dashboard alone, answering on full paths under ``path`` (route ``path`` to it)."""
    return Starlette(routes=dashboard_routes(path, api_path=api_path))


__all__ = ["DEFAULT_PATH", "asset", "dashboard_app", "dashboard_routes", "render_page"]
