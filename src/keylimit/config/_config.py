"""One ``Config`` for every part of keylimit; ``Config.from_env()`` reads ``KEYLIMIT_*``.

Every field ``name`` has the variable ``KEYLIMIT_<NAME>``; ``KEYLIMIT_CONFIG`` names a TOML
file whose keys are the field names (``[plans.free]``, ``[argon2]`` as tables); variables
override the file. Plans come from ``KEYLIMIT_PLANS`` (JSON) and ``KEYLIMIT_PLAN_<NAME>``
(``requests,prompt_tokens,completion_tokens`` or ``custom``), merged over the defaults.
An empty variable counts as unset, except where empty means "none" (admin token, token
counter, open paths). Every value is checked on creation, also when built in code:
``ConfigurationError`` names the variable first.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .._clock import Clock, system_clock
from .._errors import ConfigurationError
from .._models import Limits
from ..auth._hashing import PRODUCTION, Argon2Params
from ..ratelimit._plans import DEFAULT_PLAN, DEFAULT_PLANS
from ..redis._url import redact_url
from ._values import (
    ARGON2_FIELDS,
    CONVERTERS,
    argon2_dict,
    merged_plans,
    plan_limits,
    plan_name,
    plan_table,
)

FailurePolicy = Literal["fallback", "open", "closed"]
CONFIG_VAR = "KEYLIMIT_CONFIG"
PLAN_VAR_PREFIX = "KEYLIMIT_PLAN_"


def variable(name: str) -> str:
    """The environment variable of the field ``name``."""
    return f"KEYLIMIT_{name.upper()}"


@dataclass(frozen=True, kw_only=True, slots=True)
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
    body_timeout: float = 30.0  # KEYLIMIT_BODY_TIMEOUT (seconds for a whole request body)
    reserve_max_tokens: bool = False  # KEYLIMIT_RESERVE_MAX_TOKENS
    token_counter: str | None = None  # KEYLIMIT_TOKEN_COUNTER ("module:callable")
    argon2: Argon2Params = PRODUCTION  # KEYLIMIT_ARGON2_TIME_COST / _MEMORY_COST / _PARALLELISM
    cache_ttl: float = 5.0  # KEYLIMIT_CACHE_TTL
    cache_size: int = 10_000  # KEYLIMIT_CACHE_SIZE
    # One core is left to the event loop; each argon2 verify (p=1 by default) takes one.
    verify_concurrency: int = field(  # KEYLIMIT_VERIFY_CONCURRENCY
        default_factory=lambda: max(1, (os.cpu_count() or 1) - 1)
    )
    auth_failures_per_minute: int = 30  # KEYLIMIT_AUTH_FAILURES_PER_MINUTE
    last_used_interval: float = 60.0  # KEYLIMIT_LAST_USED_INTERVAL
    open_paths: tuple[str, ...] = ("/health", "/ping")  # KEYLIMIT_OPEN_PATHS (comma-separated)
    management: bool = True  # KEYLIMIT_MANAGEMENT: serve the management API inside Protect
    management_path: str = "/v1/accounts"  # KEYLIMIT_MANAGEMENT_PATH
    redis_timeout: float = 2.0  # KEYLIMIT_REDIS_TIMEOUT (seconds per Redis command)
    metrics_path: str | None = None  # KEYLIMIT_METRICS_PATH: serve Prometheus metrics there (None: off)
    metrics_accounts: bool = False  # KEYLIMIT_METRICS_ACCOUNTS: label metrics by account too
    clock: Clock = field(default=system_clock, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Strings (from the environment) and TOML values are converted here, so that
        # settings built in code, read from a file or from variables are checked alike.
        for name, convert in CONVERTERS.items():
            object.__setattr__(self, name, convert(getattr(self, name), variable(name)))
        limits = self.plans.get(self.default_plan, False)
        if limits is False:
            raise ConfigurationError(
                f"KEYLIMIT_DEFAULT_PLAN: unknown plan {self.default_plan!r} (plans: {', '.join(self.plans)})"
            )
        if limits is None:
            raise ConfigurationError(
                f"KEYLIMIT_DEFAULT_PLAN: plan {self.default_plan!r} has no limits of its own; "
                "the default plan needs them"
            )
        if not callable(self.clock):
            raise ConfigurationError("clock: must be a callable returning Unix seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Config:
        """Settings from ``KEYLIMIT_*`` variables, over the TOML file ``KEYLIMIT_CONFIG`` names."""
        path = environ.get(CONFIG_VAR, "")
        raw = _read_toml(path) if path else {}
        plans = raw["plans"] = merged_plans(raw.get("plans"))
        argon2 = raw["argon2"] = argon2_dict(raw.get("argon2"))
        for f in fields(cls):
            value = environ.get(variable(f.name))
            if f.name in _NOT_FROM_ENV or value is None or (value == "" and f.name not in _EMPTY_IS_NONE):
                continue
            raw[f.name] = value
        if environ.get("KEYLIMIT_PLANS"):
            try:
                table = json.loads(environ["KEYLIMIT_PLANS"])
            except ValueError as exc:
                raise ConfigurationError(f"KEYLIMIT_PLANS: not valid JSON ({exc})") from None
            plans.update(plan_table(table, "KEYLIMIT_PLANS"))
        for name in sorted(environ):
            if name.startswith(PLAN_VAR_PREFIX) and environ[name]:
                plan = name[len(PLAN_VAR_PREFIX) :].lower()
                plans[plan_name(plan, name)] = plan_limits(environ[name], name, plan)
        for sub in ARGON2_FIELDS:
            if value := environ.get(f"KEYLIMIT_ARGON2_{sub.upper()}"):
                argon2[sub] = value
        return cls(**raw)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Config:
        """Settings from a TOML file alone (keys are the field names)."""
        raw = _read_toml(os.fspath(path))
        raw["plans"] = merged_plans(raw.get("plans"))
        raw["argon2"] = argon2_dict(raw.get("argon2"))
        return cls(**raw)

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if f.name == "clock":
                continue
            if f.name == "admin_token":
                value = None if value is None else "***"
            elif f.name in ("keys_url", "limits_url"):
                value = redact_url(value)
            elif f.name == "plans":
                value = dict(value)
            shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"


_NOT_FROM_ENV = frozenset({"plans", "argon2", "clock"})
_EMPTY_IS_NONE = frozenset({"admin_token", "token_counter", "open_paths"})


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"{CONFIG_VAR}: cannot read {path!r} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{CONFIG_VAR}: {path!r} is not valid TOML ({exc})") from None
    known = set(CONVERTERS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigurationError(
            f"{CONFIG_VAR}: {path!r} has unknown settings {', '.join(map(repr, unknown))} "
            f"(settings: {', '.join(sorted(known))})"
        )
    return data
