"""A streaming reverse proxy to any HTTP server, as an ASGI app: ``proxy_app``."""

from ._app import DEFAULT_TIMEOUT, Proxy, proxy_app

__all__ = ["DEFAULT_TIMEOUT", "Proxy", "proxy_app"]
