"""Prometheus metrics for keylimit (the ``metrics`` extra: ``pip install 'keylimit[metrics]'``).

Each ``Metrics`` owns a private ``CollectorRegistry``. Labels name plans, reasons, dimensions
and storages, never a key or a secret; an ``account`` label is added only with
``accounts=True`` (one series per account: mind the cardinality). The middleware hold a
``Metrics`` or None, so with metrics off the hot path pays one None check.

    keylimit_requests_admitted_total{plan}              requests let through to the app
    keylimit_requests_refused_total{reason, plan}       refusals: missing_key, invalid_key, scope,
                                                        requests, prompt_tokens,
                                                        completion_tokens, storage
    keylimit_tokens_charged_total{dimension, plan}      prompt and completion tokens charged
    keylimit_key_cache_hits_total                       keys answered from the verified-key cache
    keylimit_argon2_verifications_total                 argon2 verifications run
    keylimit_storage_seconds{storage}                   latency of key store and limit storage calls
    keylimit_storage_errors_total{storage}              key store and limit storage calls that failed
    keylimit_limit_storage_degraded                     1 while the limit storage is down (policy in force)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from ._errors import ConfigurationError

Storage = Literal["keys", "limits"]
REASONS = (
    "missing_key",
    "invalid_key",
    "scope",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "storage",
)
NO_PLAN = "none"
"""The plan label of requests refused before their key was known."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "KEYLIMIT_METRICS_PATH: metrics need prometheus-client; install the extra: pip install 'keylimit[metrics]'"
        ) from None
    return prometheus_client


class Metrics:
    """The counters, histogram and gauge of one ``Protect`` (or of middleware given it)."""

    def __init__(self, *, accounts: bool = False) -> None:
        prom = _prometheus()
        self._prom = prom
        self.accounts = accounts
        self.registry = registry = prom.CollectorRegistry(auto_describe=True)
        who = ("plan", "account") if accounts else ("plan",)
        self._admitted = prom.Counter(
            "keylimit_requests_admitted", "Requests admitted to the app", who, registry=registry
        )
        self._refused = prom.Counter(
            "keylimit_requests_refused", "Requests refused, by reason", ("reason", *who), registry=registry
        )
        self._tokens = prom.Counter(
            "keylimit_tokens_charged", "Tokens charged, by dimension", ("dimension", *who), registry=registry
        )
        self._hits = prom.Counter(
            "keylimit_key_cache_hits", "Keys answered from the verified-key cache", registry=registry
        )
        self._verifications = prom.Counter(
            "keylimit_argon2_verifications", "argon2 verifications run", registry=registry
        )
        latency = prom.Histogram(
            "keylimit_storage_seconds",
            "Latency of key store and limit storage calls",
            ("storage",),
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        errors = prom.Counter(
            "keylimit_storage_errors", "Key store and limit storage calls that failed", ("storage",), registry=registry
        )
        self._degraded = prom.Gauge(
            "keylimit_limit_storage_degraded",
            "1 while the limit storage is down and the failure policy is in force",
            registry=registry,
        )
        self._latency = {s: latency.labels(s) for s in ("keys", "limits")}
        self._errors = {s: errors.labels(s) for s in ("keys", "limits")}
        self._bound: dict[tuple[str, ...], Any] = {}  # prebound children, by (metric, labels…)

    def __repr__(self) -> str:
        return f"Metrics(accounts={self.accounts!r})"

    def _child(self, metric: str, counter: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = counter.labels(*labels)
        return child

    def _who(self, plan: str, account: str | None) -> tuple[str, ...]:
        return (plan, account or "") if self.accounts else (plan,)

    # -- hooks ------------------------------------------------------------------------------

    def admitted(self, plan: str, account: str | None) -> None:
        self._child("a", self._admitted, *self._who(plan, account)).inc()

    def refused(self, reason: str, plan: str = NO_PLAN, account: str | None = None) -> None:
        self._child("r", self._refused, reason, *self._who(plan, account)).inc()

    def charged(self, dimension: str, tokens: float, plan: str, account: str | None) -> None:
        if tokens > 0:
            self._child("t", self._tokens, dimension, *self._who(plan, account)).inc(tokens)

    def cache_hit(self) -> None:
        self._hits.inc()

    def verification(self) -> None:
        self._verifications.inc()

    def storage_call(self, storage: Storage, seconds: float) -> None:
        self._latency[storage].observe(seconds)

    def storage_error(self, storage: Storage) -> None:
        self._errors[storage].inc()

    def watch_degraded(self, degraded: Callable[[], bool]) -> None:
        """Read the fallback state at each scrape (no cost per request)."""
        self._degraded.set_function(lambda: 1.0 if degraded() else 0.0)

    # -- exposition -------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
