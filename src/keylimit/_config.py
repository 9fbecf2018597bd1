"""One ``Config`` for every part of keylimit; ``Config.from_env()`` reads ``KEYLIMIT_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._clock import Clock, system_clock
from ._hashing import PRODUCTION, Argon2Params
from ._models import Limits
from ._plans import DEFAULT_PLAN, DEFAULT_PLANS

FailurePolicy = Literal["fallback", "open", "closed"]


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting, with its environment variable in the comment. Validated on creation."""

    keys_url: str = "sqlite:///keylimit.db"  # KEYLIMIT_KEYS_URL
    limits_url: str = "memory://"  # KEYLIMIT_LIMITS_URL
    admin_token: str | None = field(default=None, repr=False)  # KEYLIMIT_ADMIN_TOKEN
    key_prefix: str = "forii"  # KEYLIMIT_KEY_PREFIX
    plans: Mapping[str, Limits | None] = field(default_factory=lambda: dict(DEFAULT_PLANS))  # KEYLIMIT_PLANS
    default_plan: str = DEFAULT_PLAN  # KEYLIMIT_DEFAULT_PLAN
    window_seconds: float = 60.0  # KEYLIMIT_WINDOW_SECONDS
    failure_policy: FailurePolicy = "fallback"  # KEYLIMIT_FAILURE_POLICY
    ietf_headers: bool = False  # KEYLIMIT_IETF_HEADERS
    max_body_bytes: int = 32 * 1024 * 1024  # KEYLIMIT_MAX_BODY_BYTES
    reserve_max_tokens: bool = False  # KEYLIMIT_RESERVE_MAX_TOKENS
    token_counter: str | None = None  # KEYLIMIT_TOKEN_COUNTER ("module:callable")
    argon2: Argon2Params = PRODUCTION  # KEYLIMIT_ARGON2_TIME_COST / _MEMORY_COST / _PARALLELISM
    cache_ttl: float = 5.0  # KEYLIMIT_CACHE_TTL
    cache_size: int = 10_000  # KEYLIMIT_CACHE_SIZE
    verify_concurrency: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))  # KEYLIMIT_VERIFY_CONCURRENCY
    auth_failures_per_minute: int = 30  # KEYLIMIT_AUTH_FAILURES_PER_MINUTE
    last_used_interval: float = 60.0  # KEYLIMIT_LAST_USED_INTERVAL
    open_paths: tuple[str, ...] = ("/health", "/ping")  # KEYLIMIT_OPEN_PATHS (comma-separated)
    management: bool = True  # KEYLIMIT_MANAGEMENT: serve the management API inside Protect
    management_path: str = "/v1/accounts"  # KEYLIMIT_MANAGEMENT_PATH
    redis_timeout: float = 2.0  # KEYLIMIT_REDIS_TIMEOUT (seconds per Redis command)
    clock: Clock = field(default=system_clock, repr=False, compare=False)
