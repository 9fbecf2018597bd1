"""``Protect``: both layers, stacked in the right order from one ``Config``.

    client ──► KeyAuthMiddleware ──► RateLimitMiddleware ──► your app
                  (Protect)
                     └── exempt ──┬──► {management_path}/… (authorises its own)
                                  ├──► {metrics_path}
                                  └──► RateLimitMiddleware (passes it) ──► your app
    What is exempt is decided by one ``Exemptions`` (``http._exemptions``), for both layers.

With no config, ``Config.from_env()``: so ``app.add_middleware(keylimit.Protect)`` and
``vllm serve MODEL --middleware keylimit.Protect`` work with no code.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable

from ._errors import ConfigurationError, LimitStorageUnavailable
from ._types import ASGIApp, Message, Receive, Scope, Send
from .auth._middleware import KeyAuthMiddleware
from .backends import LimitBackend
from .backends.guarded import GuardedBackend
from .backends.memory import MemoryBackend
from .config import _build
from .config._config import Config
from .http._exemptions import Exemptions
from .management._app import management_app
from .metrics import Metrics
from .ratelimit._middleware import RateLimitMiddleware
from .ratelimit._tokens import TokenCounter
from .redis._url import redact_url
from .stores import KeyStore


def load_token_counter(path: str | None) -> TokenCounter | None:
    """``module:attribute`` → the counter it names (a class is instantiated)."""
    if path is None:
        return None
    module_name, _, attribute = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"KEYLIMIT_TOKEN_COUNTER: cannot import {path!r}: {exc}") from exc
    counter = target() if isinstance(target, type) else target
    if not hasattr(counter, "count_prompt") or not hasattr(counter, "count_text"):
        raise ConfigurationError(f"KEYLIMIT_TOKEN_COUNTER: {path!r} has no count_prompt/count_text")
    return counter  # type: ignore[no-any-return]


class Protect(KeyAuthMiddleware):
    """Authentication and rate limits for ``app``, configured by ``config`` or the environment.

    ``KeyAuthMiddleware`` in front of ``RateLimitMiddleware`` in front of ``app``. The
    management API and the metrics, where configured, are exempt by the same
    ``Exemptions`` as open paths and preflights, and answered by ``Protect`` itself:
    neither authenticated here nor counted nor labelled.
    """

    def __init__(self, app: ASGIApp, config: Config | None = None) -> None:
        self.config = config = config if config is not None else Config.from_env()
        plans = _build.plans(config)
        self.store: KeyStore = _build.key_store(config)
        self.limits: LimitBackend = guarded(_build.limit_backend(config), config)
        authenticator = _build.authenticator(config, self.store)
        self.metrics: Metrics | None = None
        if config.metrics_path is not None:
            self.metrics = metrics = Metrics(accounts=config.metrics_accounts)
            authenticator.metrics = metrics
            guard = self.limits
            if isinstance(guard, GuardedBackend):
                guard.metrics = metrics
                metrics.watch_degraded(lambda: guard.degraded)
        self.management: ASGIApp | None = None
        if config.management:
            self.management = management_app(
                manager=_build.key_manager(config, self.store),
                authenticate=authenticator.authenticate,
                admin_token=config.admin_token,
                path=config.management_path,
            )
        open_paths = config.open_paths if config.metrics_path is None else (*config.open_paths, config.metrics_path)
        exemptions = Exemptions(open_paths, config.management_path if config.management else None)
        limiter = RateLimitMiddleware(
            app,
            limits=self.limits,
            plans=plans,
            window=config.window_seconds,
            clock=config.clock,
            token_counter=load_token_counter(config.token_counter),
            max_body_bytes=config.max_body_bytes,
            body_timeout=config.body_timeout,
            reserve_max_tokens=config.reserve_max_tokens,
            ietf_headers=config.ietf_headers,
            exemptions=exemptions,
            metrics=self.metrics,
        )
        super().__init__(limiter, authenticator=authenticator, exemptions=exemptions, metrics=self.metrics)
        if self.management or self.metrics:
            # Exempt requests: the management API and the metrics are answered here, the
            # others (open paths, preflights) go on through the limiter, which passes them.
            self.passed = _Served(limiter, self, exemptions, self.management, self.metrics)
        self._started = False

    def __repr__(self) -> str:
        return f"Protect(config={self.config!r})"

    async def serve_management(self, management: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._started:
            # Store events (revocations from other processes) must reach the cache even
            # when the first requests are management ones.
            self._started = True
            await self.authenticator.start()
        await management(scope, receive, send)

    async def serve_metrics(self, metrics: Metrics, send: Send) -> None:
        body, content_type = metrics.exposition()
        headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The startup is checked before the app sees it: a failed start must not half-start the app.
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.startup()
            except ConfigurationError as exc:
                # The server logs the message (uvicorn: then "Application startup failed. Exiting.").
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                await self.aclose()
                return
        replayed = False

        async def wrapped() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        await self.app(scope, wrapped, send)

    async def startup(self) -> None:
        """Start the stores; with policy ``closed``, fail (``ConfigurationError``) if limit storage is down.

        Run on lifespan startup: a server that could only answer 503 refuses to start instead.
        """
        self._started = True
        await self.authenticator.start()
        if self.config.failure_policy == "closed":
            try:
                await self.limits.ping()
            except LimitStorageUnavailable:
                raise ConfigurationError(
                    f"KEYLIMIT_LIMITS_URL: the rate limit storage {redact_url(self.config.limits_url)} "
                    "does not answer at start-up, and KEYLIMIT_FAILURE_POLICY is closed "
                    "(every request would be refused with 503); start it, fix the URL, "
                    "or choose KEYLIMIT_FAILURE_POLICY=fallback"
                ) from None

    async def aclose(self) -> None:
        """Flush pending writes and close the stores (also done on lifespan shutdown)."""
        await self.authenticator.aclose()
        await self.store.aclose()
        await self.limits.aclose()


class _Served:
    """Where ``Protect`` sends exempt requests: the management API and the metrics where they
    are served, else on through the limiter (which passes them). It only chooses; the
    coroutine it returns is the one that runs."""

    __slots__ = ("app", "exemptions", "management", "metrics", "metrics_path", "protect")

    def __init__(
        self,
        app: ASGIApp,
        protect: Protect,
        exemptions: Exemptions,
        management: ASGIApp | None,
        metrics: Metrics | None,
    ) -> None:
        self.app, self.protect, self.exemptions = app, protect, exemptions
        self.management, self.metrics, self.metrics_path = management, metrics, protect.config.metrics_path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            path = scope["path"]
            if self.management is not None and self.exemptions.is_management(path):
                return self.protect.serve_management(self.management, scope, receive, send)
            if self.metrics is not None and path == self.metrics_path:
                return self.protect.serve_metrics(self.metrics, send)
        return self.app(scope, receive, send)


def guarded(backend: LimitBackend, config: Config) -> LimitBackend:
    """Wrap a shared backend in the failure policy; per-process memory needs none."""
    if isinstance(backend, MemoryBackend):
        return backend
    return GuardedBackend(backend, policy=config.failure_policy, clock=config.clock)


def protect(app: ASGIApp, config: Config | None = None) -> Protect:
    """``Protect(app, config)``, as a function."""
    return Protect(app, config)
