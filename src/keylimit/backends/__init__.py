"""Limit backends, chosen by URL scheme.

``memory://`` is ours; ``redis://``, ``rediss://`` and ``redis+cluster://`` take the Redis
fast path (one script per admission); any other scheme the ``limits`` library knows
(``redis+sentinel://``, ``memcached://``, ``mongodb://``, …) takes the generic path.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ._base import DIMENSIONS, Decision, LimitBackend, Vector

_REDIS = "keylimit.backends.redis:RedisBackend"
_SCHEMES = {
    "memory": "keylimit.backends.memory:MemoryBackend",
    "redis": _REDIS,
    "rediss": _REDIS,
    "redis+cluster": _REDIS,
}
_GENERIC = "keylimit.backends.generic:LimitsBackend"


def open_limit_backend(url: str, window: float, *, timeout: float = 2.0) -> LimitBackend:
    """The backend for ``url``. Raises ``ConfigurationError`` naming ``KEYLIMIT_LIMITS_URL``.

    ``timeout`` bounds each command of the Redis fast path, in seconds.
    """
    scheme = urlsplit(url).scheme.lower()
    target = _SCHEMES.get(scheme, _GENERIC)
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name).from_url
    backend: LimitBackend = factory(url, window, timeout=timeout) if target == _REDIS else factory(url, window)
    return backend


__all__ = ["DIMENSIONS", "Decision", "LimitBackend", "Vector", "open_limit_backend"]
