"""Limit backends, chosen by URL scheme.

``memory://`` is ours; ``redis://``, ``rediss://`` and ``redis+cluster://`` take the Redis
fast path (one script per admission); any other scheme the ``limits`` library knows
(``redis+sentinel://``, ``memcached://``, ``mongodb://``, …) takes the generic path.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ._base import DIMENSIONS, Decision, LimitBackend, Vector

_SCHEMES = {
    "memory": "keylimit.backends.memory:MemoryBackend",
    "redis": "keylimit.backends.redis:RedisBackend",
    "rediss": "keylimit.backends.redis:RedisBackend",
    "redis+cluster": "keylimit.backends.redis:RedisBackend",
}
_GENERIC = "keylimit.backends.generic:LimitsBackend"


def open_limit_backend(url: str, window: float) -> LimitBackend:
    """The backend for ``url``. Raises ``ConfigurationError`` naming ``KEYLIMIT_LIMITS_URL``."""
    scheme = urlsplit(url).scheme.lower()
    target = _SCHEMES.get(scheme, _GENERIC)
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    backend: LimitBackend = getattr(module, class_name).from_url(url, window)
    return backend


__all__ = ["DIMENSIONS", "Decision", "LimitBackend", "Vector", "open_limit_backend"]
