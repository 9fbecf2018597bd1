"""``RateLimitMiddleware``: plan-aware limits on requests, prompt tokens and completion tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._clock import Clock, system_clock
from .._diagnostics import get_logger, report_bug
from .._errors import (
    HTTPError,
    LimitStorageUnavailable,
    RateLimited,
    RequestTimeout,
    http_error_for,
    retry_after_seconds,
)
from .._models import Principal
from .._types import PRINCIPAL_SCOPE_KEY, ASGIApp, Message, Receive, Scope, Send
from ..backends import DIMENSIONS, Decision, LimitBackend, Vector, open_limit_backend
from ..http._body import body_headers, decode_body, receive_body, replay, too_large, with_body_headers
from ..http._deadline import DeadlineExceeded, Deadlines
from ..http._encodings import restrict_accept_encoding
from ..http._error_response import send_error
from ..http._exemptions import DEFAULT_OPEN_PATHS, Exemptions
from ..http._reading import tap_for
from ..http._request import TokenRequest, inspect_request, token_count
from ..http._taps import Tap
from ..metrics import Metrics
from ._headers import is_rate_limit_header, rate_limit_headers, replace_rate_limit_headers, with_headers
from ._plans import Plans
from ._tokens import EstimatingTokenCounter, TokenCounter

logger = get_logger("keylimit.limits")


def account_identity(account_id: str) -> str:
    """The limiter's identity for an account: every key of the account shares its counters."""
    return f"acct:{account_id}"


_NOTHING: Vector = (0, 0, 0)
_ONE_REQUEST: Vector = (1, 0, 0)
_DIMENSION_WORDS = {"requests": "requests", "prompt_tokens": "prompt tokens", "completion_tokens": "completion tokens"}


def client_address(scope: Scope) -> str | None:
    """The default identity without a principal: the client's address."""
    client = scope.get("client")
    return f"ip:{client[0]}" if client else None


class RateLimitMiddleware:
    """Admits each request against its account's plan and adds ``X-Ratelimit-*`` to the answer.

    The account comes from ``scope["keylimit.principal"]`` (written by ``KeyAuthMiddleware``);
    without one, from ``identity(scope)`` on the default plan (None: not limited). A string
    ``limits`` is opened with ``window``; a backend object counts in its own window.

    A request that may carry a body has it read whole first, whatever its method and
    content type (up to ``max_body_bytes``, else 413; within ``body_timeout`` seconds, else
    408; a content coding keylimit cannot undo, 415; each counts as one request), and the
    body decides what it costs (``http._request.inspect_request``): a token request, its prompt
    estimate; anything else, one request. Completion tokens, and the prompt's correction,
    are charged from the response's ``usage`` when it ends (see ``http._taps``). Exempt requests
    (``http._exemptions``) pass untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: LimitBackend | str = "memory://",
        plans: Plans | None = None,
        window: float = 60.0,
        clock: Clock = system_clock,
        identity: Callable[[Scope], str | None] | None = None,
        token_counter: TokenCounter | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
        body_timeout: float | None = 30.0,
        reserve_max_tokens: bool = False,
        ietf_headers: bool = False,
        open_paths: Sequence[str] = DEFAULT_OPEN_PATHS,
        management_path: str | None = None,
        exemptions: Exemptions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if body_timeout is not None and not body_timeout > 0:
            raise ValueError("body_timeout must be positive (or None: no limit)")
        self.app = app
        self.backend = open_limit_backend(limits, window) if isinstance(limits, str) else limits
        self._owns_backend = isinstance(limits, str)
        self.plans = plans or Plans()
        self.clock = clock
        self.identity = identity or client_address
        self.counter = token_counter or EstimatingTokenCounter()
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._deadlines = Deadlines(body_timeout) if body_timeout is not None else None
        self.reserve_max_tokens = reserve_max_tokens
        self.ietf_headers = ietf_headers
        self.metrics = metrics
        self.exempt = exemptions if exemptions is not None else Exemptions(open_paths, management_path)

    async def aclose(self) -> None:
        """Close the limit backend if this middleware opened it from a URL."""
        if self._owns_backend:
            await self.backend.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        # Admitted for the principal's account (written by the key layer), else by ``identity``;
        # served, or the refusal answered. One frame for the whole request.
        principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
        if principal is not None:
            key = account_identity(principal.account_id)
            plan = principal.plan
            limits = self.plans.resolve(plan, principal.limits).as_tuple()
        else:
            ident = self.identity(scope)
            if ident is None:
                await self.app(scope, receive, send)
                return
            key, plan = ident, self.plans.default
            limits = self.plans.resolve(plan).as_tuple()

        request: TokenRequest | None = None
        refused: HTTPError | None = None  # a body too large, too slow or unreadable: answered after counting
        expected, length, coding, accept = body_headers(scope["method"], scope["headers"])
        if expected:
            limit = self.max_body_bytes
            try:
                if length is not None and length.isdigit() and int(length) > limit:
                    raise too_large(limit)
                # A total deadline, not one per chunk: a client trickling bytes is bounded too.
                body = await receive_body(receive, limit, self._deadlines)
                if body is None:
                    return  # the client went away before sending its body
                raw = body if coding is None else decode_body(body, coding, limit)
            except HTTPError as exc:
                refused = exc
            except DeadlineExceeded:
                refused = RequestTimeout(f"The request body did not arrive within {self.body_timeout:g} seconds.")
            else:
                request = inspect_request(raw, self.counter)
                forwarded = raw if request is None else request.body
                receive = replay(forwarded, receive)
                if forwarded is not body:
                    scope = with_body_headers(scope, len(forwarded))

        if request is None:
            charge = need = _ONE_REQUEST
        else:
            reserved = request.reserve if self.reserve_max_tokens else 0
            charge = (1, request.prompt_tokens, reserved)
            need = (1, request.prompt_tokens, max(1, reserved) if request.generates else 0)

        now = self.clock()
        metrics = self.metrics
        account = principal.account_id if principal is not None else None
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            decision = await self.backend.acquire(key, limits, charge, need, now)
        except Exception as exc:
            if not isinstance(exc, LimitStorageUnavailable):
                report_bug(logger, "the limit backend's acquire", exc)
            if metrics is not None:  # storage errors are counted where the call failed (GuardedBackend)
                metrics.refused("storage", plan, account)
            self._log_refusal(key, principal, "storage", None)
            unavailable = exc if isinstance(exc, LimitStorageUnavailable) else LimitStorageUnavailable()
            await send_error(send, http_error_for(unavailable))
            return
        if metrics is not None:
            metrics.storage_call("limits", time.perf_counter() - started)

        headers = rate_limit_headers(decision, now, ietf=self.ietf_headers)
        if not decision.allowed:
            d = decision.exceeded or 0
            if metrics is not None:
                metrics.refused(DIMENSIONS[d], plan, account)
            self._log_refusal(key, principal, DIMENSIONS[d], decision.limits[d], decision.window)
            await send_error(send, _rate_limited(decision, plan), headers)
            return
        if refused is not None:
            await send_error(send, refused, headers)
            return
        if metrics is not None:
            metrics.admitted(plan, account)
        if request is None:
            await self.app(scope, receive, with_headers(send, headers))
            return

        # The app is asked only for content codings whose usage can be read.
        if accept is not None or request.strip_usage:
            accepted = restrict_accept_encoding(scope["headers"], request.strip_usage)
            if accepted is not scope["headers"]:
                scope = {**scope, "headers": accepted}

        # A token-bearing request: the response is read as it passes, then settled.
        tap: Tap | None = None
        strip = request.strip_usage

        async def send_reading(message: Message) -> None:
            nonlocal tap
            if message["type"] == "http.response.body":
                if tap is None:
                    await send(message)
                    return
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                out = tap.feed(chunk, more)
                if out is not chunk:
                    if not out and more:
                        return
                    message["body"] = out
                await send(message)
                tap.commit()
                return
            if message["type"] == "http.response.start":
                raw = message.get("headers", ())
                content_type = b""
                encoding: bytes | None = None
                owned = False
                for name, value in raw:
                    if name == b"content-type":
                        if not content_type:
                            content_type = value
                    elif name == b"content-encoding":
                        encoding = value if encoding is None else encoding + b"," + value
                    elif not owned and is_rate_limit_header(name):
                        owned = True
                tap = tap_for(content_type, encoding, strip, request.reserve)
                if tap is not None and tap.rewrites:  # stripping usage changes the length (and undoes any coding)
                    dropped = (b"content-length", b"content-encoding") if tap.decodes else (b"content-length",)
                    message["headers"] = [(n, v) for n, v in raw if not (is_rate_limit_header(n) or n in dropped)] + (
                        headers
                    )
                else:
                    message["headers"] = replace_rate_limit_headers(raw, headers, owned)
            await send(message)

        try:
            await self.app(scope, receive, send_reading)
        finally:
            self._settle(key, request, charge, tap, plan, account)

    def _settle(
        self, key: str, request: TokenRequest, charge: Vector, tap: Tap | None, plan: str, account: str | None
    ) -> None:
        """Charge what the response used, once, whatever way it ended; never raises.

        Synchronous (the backend applies it at once or batches it), so that it also runs
        from a cancelled task and costs the response no round trip. The prompt charge is
        corrected to the reported ``usage.prompt_tokens``; completion tokens are the
        reported ones, else the text sent counted.
        """
        try:
            usage = tap.usage if tap is not None else None
            prompt_delta = 0
            if usage is not None:
                prompt = token_count(usage.get("prompt_tokens"))
                if prompt is not None:
                    prompt_delta = prompt - charge[1]
                used = token_count(usage.get("completion_tokens")) or 0
            elif tap is not None:
                used = self.counter.count_text(tap.sent_text())
            else:
                used = 0
            delta = (0, prompt_delta, used - charge[2])
            if delta != _NOTHING:
                self.backend.settle(key, delta, self.clock())
            if self.metrics is not None:
                self.metrics.charged("prompt_tokens", charge[1] + delta[1], plan, account)
                self.metrics.charged("completion_tokens", charge[2] + delta[2], plan, account)
        except Exception as exc:
            report_bug(logger, "settling a response", exc)

    def _log_refusal(
        self, key: str, principal: Principal | None, reason: str, limit: int | None, window: float = 0.0
    ) -> None:
        key_id = principal.key_id if principal is not None else None
        extra = {
            "account": principal.account_id if principal is not None else None,
            "key_id": key_id,
            "reason": reason,
            "limit": limit,
            "identity": key,
        }
        if limit is None:
            logger.info("refused %s key=%s: rate limit storage unavailable", key, key_id or "-", extra=extra)
        else:
            logger.info(
                "rate limited %s key=%s limit=%s %d/%ds", key, key_id or "-", reason, limit, window, extra=extra
            )


def _rate_limited(decision: Decision, plan: str) -> RateLimited:
    d = decision.exceeded or 0
    dimension = DIMENSIONS[d]
    per = "minute" if decision.window == 60 else f"{decision.window:g} seconds"
    wait = retry_after_seconds(decision.retry_after)
    used = decision.used[d]
    message = (
        f"Rate limit reached for {_DIMENSION_WORDS[dimension]} per {per} on plan {plan}: "
        f"limit {decision.limits[d]}, used {used:.0f}, requested {decision.requested[d]}. Try again in {wait}s."
    )
    return RateLimited(message, kind="requests" if d == 0 else "tokens", retry_after=max(decision.retry_after, 0.001))
