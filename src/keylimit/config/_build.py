"""Building the working parts from a ``Config``: the one place Protect, the management app,
the CLI and the demo get their store, hasher, key format, plans, ``KeyManager`` and
``Authenticator`` from."""

from __future__ import annotations

from ..auth._authenticator import Authenticator
from ..auth._hashing import Hasher
from ..auth._keys import KeyFormat
from ..backends import LimitBackend, open_limit_backend
from ..management._manager import KeyManager
from ..ratelimit._plans import Plans
from ..stores import KeyStore, open_key_store
from ._config import Config


def key_store(config: Config) -> KeyStore:
    """The store ``KEYLIMIT_KEYS_URL`` names (not yet started; the caller closes it)."""
    return open_key_store(config.keys_url, timeout=config.redis_timeout)


def limit_backend(config: Config) -> LimitBackend:
    """The limit storage ``KEYLIMIT_LIMITS_URL`` names, counting in ``window_seconds`` windows."""
    return open_limit_backend(config.limits_url, config.window_seconds, timeout=config.redis_timeout)


def hasher(config: Config) -> Hasher:
    return Hasher(config.argon2)


def key_format(config: Config) -> KeyFormat:
    return KeyFormat(config.key_prefix)


def plans(config: Config) -> Plans:
    return Plans(config.plans, config.default_plan)


def key_manager(config: Config, store: KeyStore | None = None) -> KeyManager:
    """A ``KeyManager`` over ``store`` (by default a new one from ``KEYLIMIT_KEYS_URL``)."""
    return KeyManager(
        key_store(config) if store is None else store,
        key_format=key_format(config),
        hasher=hasher(config),
        plans=plans(config),
        clock=config.clock,
    )


def authenticator(config: Config, store: KeyStore | None = None) -> Authenticator:
    """The key hot path over ``store`` (by default a new one), with the cache and throttle settings."""
    return Authenticator(
        key_store(config) if store is None else store,
        key_format=key_format(config),
        hasher=hasher(config),
        plans=plans(config),
        clock=config.clock,
        cache_ttl=config.cache_ttl,
        cache_size=config.cache_size,
        verify_concurrency=config.verify_concurrency,
        failures_per_minute=config.auth_failures_per_minute,
        last_used_interval=config.last_used_interval,
    )
