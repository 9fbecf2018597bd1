"""Key stores, chosen by URL scheme."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from ._base import KeyStore, Listener, StoreEvent

# scheme -> "module:Class"; modules load lazily so optional dependencies stay optional.
_SCHEMES = {
    "memory": "keylimit.stores.memory:MemoryKeyStore",
    "sqlite": "keylimit.stores.sqlite:SQLiteKeyStore",
    "redis": "keylimit.stores.redis:RedisKeyStore",
    "rediss": "keylimit.stores.redis:RedisKeyStore",
    "redis+cluster": "keylimit.stores.redis:RedisKeyStore",
}


def open_key_store(url: str, *, timeout: float = 2.0) -> KeyStore:
    """The store for ``url`` (``memory://``, ``sqlite:///path.db``, ``redis://…``, …).

    Raises ``ConfigurationError`` naming ``KEYLIMIT_KEYS_URL`` for an unknown scheme.
    """
    scheme = urlsplit(url).scheme.lower()
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(f"KEYLIMIT_KEYS_URL: unknown scheme {scheme!r} (expected one of {known})")
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, class_name).from_url
    store: KeyStore = factory(url, timeout=timeout) if scheme.startswith("redis") else factory(url)
    return store


__all__ = ["KeyStore", "Listener", "StoreEvent", "open_key_store"]
