"""The settings' value converters: ``(value, variable) -> value``, each raising
``ConfigurationError`` that names the variable first; ``CONVERTERS`` maps every ``Config``
field to its converter."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from .._models import Limits
from ..auth._hashing import PRODUCTION, Argon2Params
from ..auth._keys import validate_prefix
from ..backends import _SCHEMES as LIMIT_SCHEMES
from ..ratelimit._plans import DEFAULT_PLANS
from ..redis._url import redact_url
from ..stores import _SCHEMES as KEY_SCHEMES

FAILURE_POLICIES = ("fallback", "open", "closed")
ARGON2_FIELDS = ("time_cost", "memory_cost", "parallelism")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_PLAN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_RE = re.compile(rf"{_DOTTED}:{_DOTTED}")
_SPACE_RE = re.compile(r"[\s\x00-\x1f\x7f]")


def _text(value: object, var: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{var}: must be a string, not {value!r}")
    return value.strip()


def _key_store_url(value: object, var: str) -> str:
    url = _text(value, var)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in KEY_SCHEMES:
        known = ", ".join(f"{s}://" for s in KEY_SCHEMES)
        raise ConfigurationError(f"{var}: unknown store {redact_url(url)!r} (expected one of {known})")
    if scheme == "sqlite" and (url.partition("://")[2] in ("", "/") or urlsplit(url).netloc):
        raise ConfigurationError(
            f"{var}: a SQLite URL has three slashes before a relative path (sqlite:///keylimit.db) "
            "and four before an absolute one (sqlite:////var/lib/keylimit.db)"
        )
    return url


def _limits_url(value: object, var: str) -> str:
    url = _text(value, var)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in LIMIT_SCHEMES:
        from limits.storage import SCHEMES  # type: ignore[attr-defined]  # limits' registry of schemes

        if not scheme or (scheme not in SCHEMES and f"async+{scheme}" not in SCHEMES):
            known = ", ".join(f"{s}://" for s in LIMIT_SCHEMES)
            raise ConfigurationError(
                f"{var}: unknown storage {redact_url(url)!r} (expected {known} or a scheme of the limits library)"
            )
    return url


def _secret(value: object, var: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or _SPACE_RE.search(value):
        # Never echo the value: it is a secret.
        raise ConfigurationError(f"{var}: must be a string without spaces or control characters")
    return value


def _prefix(value: object, var: str) -> str:
    try:
        return validate_prefix(value)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigurationError(f"{var}: must be 1 to 32 ASCII letters or digits, not {value!r}") from None


def plan_name(name: object, var: str) -> str:
    if not isinstance(name, str) or not _PLAN_NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"{var}: plan name must be 1 to 64 letters, digits, _ . - (starting with a letter or digit), not {name!r}"
        )
    return name


def plan_limits(value: object, var: str, plan: str) -> Limits | None:
    """A plan's limits from ``Limits``, ``None``/``"custom"``, ``[r, p, c]``, ``"r,p,c"`` or a table."""
    if value is None or isinstance(value, Limits):
        return value
    if isinstance(value, str):
        if value.strip().lower() == "custom":
            return None
        value = value.split(",")
    numbers: Sequence[object]
    if isinstance(value, Mapping) and set(value) == {"requests", "prompt_tokens", "completion_tokens"}:
        numbers = [value["requests"], value["prompt_tokens"], value["completion_tokens"]]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        numbers = value
    else:
        raise ConfigurationError(
            f"{var}: plan {plan!r} must be requests,prompt_tokens,completion_tokens (three whole numbers), "
            f"a table of those three, or 'custom'; not {value!r}"
        )
    try:
        return Limits(*(_non_negative_int(n, var) for n in numbers))
    except ConfigurationError:
        raise ConfigurationError(
            f"{var}: plan {plan!r} limits must be whole numbers, zero or more, not {value!r}"
        ) from None


def plan_table(value: object, var: str) -> dict[str, Limits | None]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{var}: must map plan names to limits, not {value!r}")
    return {plan_name(name, var): plan_limits(limits, var, name) for name, limits in value.items()}


def _plans(value: object, var: str) -> Mapping[str, Limits | None]:
    table = plan_table(value, var)
    if not table:
        raise ConfigurationError(f"{var}: needs at least one plan")
    return MappingProxyType(table)


def merged_plans(value: object) -> dict[str, Limits | None]:
    plans = dict(DEFAULT_PLANS)
    if value is not None:
        plans.update(plan_table(value, "KEYLIMIT_PLANS"))
    return plans


def argon2_dict(value: object) -> dict[str, Any]:
    params: dict[str, Any] = {name: getattr(PRODUCTION, name) for name in ARGON2_FIELDS}
    if value is not None:
        if not isinstance(value, Mapping) or not set(value) <= set(ARGON2_FIELDS):
            raise ConfigurationError(f"KEYLIMIT_ARGON2_*: [argon2] takes {', '.join(ARGON2_FIELDS)}, not {value!r}")
        params.update(value)
    return params


def _argon2(value: object, var: str) -> Argon2Params:
    if isinstance(value, Argon2Params):
        return value
    if not isinstance(value, Mapping) or not set(value) <= set(ARGON2_FIELDS):
        raise ConfigurationError(f"{var}: must be Argon2Params or a table of {', '.join(ARGON2_FIELDS)}")
    merged = {name: value.get(name, getattr(PRODUCTION, name)) for name in ARGON2_FIELDS}
    time_cost, memory_cost, parallelism = (_positive_int(merged[n], f"{var}_{n.upper()}") for n in ARGON2_FIELDS)
    if memory_cost < 8 * parallelism:
        raise ConfigurationError(
            f"{var}_MEMORY_COST: must be at least 8 KiB per lane (8 x parallelism = {8 * parallelism}), "
            f"not {merged['memory_cost']!r}"
        )
    return Argon2Params(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


def _number(value: object, var: str) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{var}: must be a positive number, not {value!r}")
    return number


def _integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def _positive_int(value: object, var: str) -> int:
    number = _integer(value)
    if number is None or number <= 0:
        raise ConfigurationError(f"{var}: must be a positive whole number, not {value!r}")
    return number


def _non_negative_int(value: object, var: str) -> int:
    number = _integer(value)
    if number is None or number < 0:
        raise ConfigurationError(f"{var}: must be a whole number, zero or more, not {value!r}")
    return number


def _boolean(value: object, var: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{var}: must be one of 1/0, true/false, yes/no, on/off, not {value!r}")


def _failure_policy(value: object, var: str) -> str:
    if isinstance(value, str) and value.strip().lower() in FAILURE_POLICIES:
        return value.strip().lower()
    raise ConfigurationError(f"{var}: must be one of {', '.join(FAILURE_POLICIES)}, not {value!r}")


def _import_path(value: object, var: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _IMPORT_RE.fullmatch(value.strip()):
        raise ConfigurationError(f"{var}: must be 'module:callable' (like 'mypkg.tokens:count'), not {value!r}")
    return value.strip()


def _path(value: object, var: str) -> str:
    text = _text(value, var)
    if not text.startswith("/") or _SPACE_RE.search(text) or "?" in text or "#" in text:
        raise ConfigurationError(f"{var}: must be a URL path starting with '/', not {value!r}")
    return text


def _mount_path(value: object, var: str) -> str:
    path = _path(value, var).rstrip("/")
    if not path:
        raise ConfigurationError(f"{var}: must be a URL path below the root, like /v1/accounts, not {value!r}")
    return path


def _optional_path(value: object, var: str) -> str | None:
    if value is None or value == "":
        return None
    return _mount_path(value, var)


def _paths(value: object, var: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigurationError(f"{var}: must be comma-separated URL paths, not {value!r}")
    return tuple(_path(item, var) for item in items if not (isinstance(item, str) and not item.strip()))


CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "keys_url": _key_store_url,
    "limits_url": _limits_url,
    "admin_token": _secret,
    "key_prefix": _prefix,
    "plans": _plans,
    "default_plan": _text,
    "window_seconds": _number,
    "failure_policy": _failure_policy,
    "ietf_headers": _boolean,
    "max_body_bytes": _positive_int,
    "body_timeout": _number,
    "reserve_max_tokens": _boolean,
    "token_counter": _import_path,
    "argon2": _argon2,
    "cache_ttl": _number,
    "cache_size": _positive_int,
    "verify_concurrency": _positive_int,
    "auth_failures_per_minute": _positive_int,
    "last_used_interval": _number,
    "open_paths": _paths,
    "management": _boolean,
    "management_path": _mount_path,
    "redis_timeout": _number,
    "metrics_path": _optional_path,
    "metrics_accounts": _boolean,
}
