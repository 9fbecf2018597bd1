"""What passes keylimit unauthenticated and uncounted: decided here, and nowhere else.

Three things are exempt: the open paths (matched exactly), the management prefix (itself
and below it) only while a management API is served there, and CORS preflights (``OPTIONS``
with ``Origin`` and ``Access-Control-Request-Method`` and no body), which a browser sends
without credentials and must not be refused or counted. Everything else is authenticated
and counted, whatever the app mounts under those prefixes. ``KeyAuthMiddleware``,
``RateLimitMiddleware`` and ``Protect`` all ask the same ``Exemptions``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._types import Scope

DEFAULT_OPEN_PATHS = ("/health", "/ping")


class Exemptions:
    """``exemptions(scope)``: whether the request passes both layers untouched.

    ``management_path`` is where a management API is served (None: nowhere, and nothing
    under any prefix is exempt).
    """

    __slots__ = ("_management_prefix", "management_path", "open_paths")

    def __init__(self, open_paths: Iterable[str] = DEFAULT_OPEN_PATHS, management_path: str | None = None) -> None:
        self.open_paths = frozenset(open_paths)
        management = management_path.rstrip("/") if management_path else None
        self.management_path = management or None
        self._management_prefix = management + "/" if management else None

    def __repr__(self) -> str:
        return f"Exemptions(open_paths={sorted(self.open_paths)!r}, management_path={self.management_path!r})"

    def __call__(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in self.open_paths:
            return True
        prefix = self._management_prefix  # is_management, written out: this runs on every request
        if prefix is not None and (path.startswith(prefix) or path == self.management_path):
            return True
        return scope.get("method") == "OPTIONS" and is_preflight(scope["headers"])

    def is_management(self, path: str) -> bool:
        """Whether ``path`` is the management API's (itself or below it)."""
        prefix = self._management_prefix
        return prefix is not None and (path.startswith(prefix) or path == self.management_path)


def is_preflight(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A CORS preflight's headers: ``Origin`` and ``Access-Control-Request-Method``, and no body."""
    origin = method = False
    for name, value in headers:
        if name == b"origin":
            origin = True
        elif name == b"access-control-request-method":
            method = True
        elif (name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding":
            return False
    return origin and method
