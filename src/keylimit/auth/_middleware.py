"""``KeyAuthMiddleware``: Bearer keys in front of any ASGI app."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from starlette.authentication import AuthCredentials

from .._diagnostics import get_logger, report_bug
from .._errors import (
    ConfigurationError,
    HTTPError,
    InsufficientScope,
    InvalidKey,
    MissingKey,
    ServiceUnavailable,
    StorageUnavailable,
    http_error_for,
)
from .._models import Principal, Scope
from .._types import PRINCIPAL_SCOPE_KEY, ASGIApp, Message, Receive, Send
from .._types import Scope as ASGIScope
from ..http._error_response import close_websocket, send_error
from ..http._exemptions import DEFAULT_OPEN_PATHS, Exemptions
from ..metrics import NO_PLAN, Metrics
from ..stores import KeyStore, open_key_store
from ._authenticator import Authenticator

logger = get_logger("keylimit.auth")
refusals = get_logger("keylimit.auth.refusals")

READ_METHODS = frozenset({"GET", "HEAD"})
_REASONS: dict[type[HTTPError], str] = {
    MissingKey: "missing_key",
    InvalidKey: "invalid_key",
    InsufficientScope: "scope",
    ServiceUnavailable: "storage",
}


class KeyAuthMiddleware:
    """Authenticates every HTTP and websocket request but the exempt ones (``http._exemptions``:
    open paths, the management API where one is served, CORS preflights).

    Pass an ``authenticator``, or ``keys`` (a ``KeyStore`` or a store URL) and any
    ``Authenticator`` options; a store opened here from a URL is closed at lifespan shutdown.
    ``management_path`` is where your app serves ``management_app`` (which authorizes its
    own requests), if it does; ``exemptions`` replaces ``open_paths`` and ``management_path``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator | None = None,
        keys: KeyStore | str | None = None,
        open_paths: Iterable[str] = DEFAULT_OPEN_PATHS,
        management_path: str | None = None,
        exemptions: Exemptions | None = None,
        metrics: Metrics | None = None,
        **authenticator_options: Any,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self._owned_store: KeyStore | None = None
        if authenticator is None:
            if keys is None:
                raise ConfigurationError("KeyAuthMiddleware needs authenticator= or keys= (a KeyStore or a store URL)")
            store = open_key_store(keys) if isinstance(keys, str) else keys
            self._owned_store = store if isinstance(keys, str) else None
            authenticator = Authenticator(store, **authenticator_options)
        elif keys is not None or authenticator_options:
            raise ConfigurationError("KeyAuthMiddleware: pass either authenticator= or keys= with its options")
        self.authenticator = authenticator
        self.exempt = exemptions if exemptions is not None else Exemptions(open_paths, management_path)
        self.passed: ASGIApp = app
        """Where exempt requests go: the app, unless a composition serves some of them itself."""

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            if self.exempt(scope):
                await self.passed(scope, receive, send)
            elif self.recall(scope) is not None or await self.admit(scope, send) is not None:
                await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def lifespan(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        """The lifespan protocol: the key store started and closed around the app's."""
        await self.app(scope, self._lifespan_receive(receive), send)

    def recall(self, scope: ASGIScope) -> Principal | None:
        """The caller's principal if its key is fresh in the cache and allowed this request,
        recorded in ``scope``; else None, and ``admit`` decides. No I/O, no await."""
        principal = self.authenticator.recall(_authorization(scope))
        if principal is None or not _allows(principal, scope):
            return None
        _record(scope, principal)
        return principal

    async def admit(self, scope: ASGIScope, send: Send) -> Principal | None:
        """The caller's principal, recorded in ``scope``; or None when the request was
        refused (the answer is sent)."""
        try:
            principal = await self._authenticate(scope)
        except HTTPError as error:
            await self._refuse(scope, send, error, None)
            return None
        if not _allows(principal, scope):
            method = scope.get("method", "WEBSOCKET")
            granted = ", ".join(sorted(s.value for s in principal.scopes))
            denied = InsufficientScope(f"This API key's scopes ({granted}) do not allow {method} requests.")
            await self._refuse(scope, send, denied, principal)
            return None
        _record(scope, principal)
        return principal

    async def _refuse(self, scope: ASGIScope, send: Send, error: HTTPError, principal: Principal | None) -> None:
        reason = _REASONS.get(type(error), error.code)
        account = principal.account_id if principal is not None else None
        key_id = principal.key_id if principal is not None else None
        plan = principal.plan if principal is not None else NO_PLAN
        if self.metrics is not None:
            self.metrics.refused(reason, plan, account)
        client = scope.get("client")
        refusals.info(
            "refused %s: %s (account=%s key=%s)",  # no path: a client may put anything in it
            scope.get("method", "WEBSOCKET"),
            reason,
            account or "-",
            key_id or "-",
            extra={
                "account": account,
                "key_id": key_id,
                "reason": reason,
                "limit": None,
                "status": error.status,
                "client": client[0] if client else None,
            },
        )
        if scope["type"] == "websocket":
            await close_websocket(send, error)
        else:
            await send_error(send, error)

    async def _authenticate(self, scope: ASGIScope) -> Principal:
        """The principal, or an ``HTTPError`` to answer with; nothing else escapes. Scopes are checked by the caller."""
        client = scope.get("client")
        try:
            principal = await self.authenticator.authenticate(_authorization(scope), client[0] if client else None)
        except HTTPError:
            raise
        except StorageUnavailable as exc:
            raise http_error_for(exc) from None
        except Exception as exc:
            report_bug(logger, "authentication", exc)
            raise ServiceUnavailable("Authentication is unavailable. Try again shortly.", retry_after=1.0) from None
        return principal

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.authenticator.start()
                except Exception as exc:
                    # The first request tries again; it answers 503 meanwhile.
                    logger.warning("could not start the key store at startup (%s)", type(exc).__name__)
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
            return message

        return wrapped

    async def _shutdown(self) -> None:
        try:
            await self.authenticator.aclose()
            if self._owned_store is not None:
                await self._owned_store.aclose()
        except Exception as exc:
            logger.warning("could not close the key store cleanly (%s)", type(exc).__name__)


def _authorization(scope: ASGIScope) -> bytes | None:
    header: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":  # two headers make one invalid key
            header = value if header is None else header + b", " + value
    return header


def _record(scope: ASGIScope, principal: Principal) -> None:
    scope[PRINCIPAL_SCOPE_KEY] = principal
    scope["user"] = principal
    scope["auth"] = _credentials(principal.scopes)


@functools.lru_cache(maxsize=64)
def _credentials(scopes: frozenset[Scope]) -> AuthCredentials:
    return AuthCredentials(sorted(s.value for s in scopes))


def _allows(principal: Principal, scope: ASGIScope) -> bool:
    scopes = principal.scopes
    if Scope.FULL in scopes or Scope.INFERENCE in scopes:
        return True
    return Scope.READ in scopes and scope["type"] == "http" and scope["method"] in READ_METHODS
