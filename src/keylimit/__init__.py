"""keylimit: API keys and plan-aware rate limits for any ASGI inference server."""

from __future__ import annotations

from ._clock import Clock, ManualClock
from ._errors import (
    AuthThrottled,
    BadRequest,
    ConfigurationError,
    HTTPError,
    InsufficientScope,
    InvalidKey,
    KeylimitError,
    KeyStoreUnavailable,
    LimitStorageUnavailable,
    MissingKey,
    NotFound,
    RateLimited,
    RequestTimeout,
    RequestTooLarge,
    StorageUnavailable,
)
from ._models import Account, KeyRecord, KeyStatus, KeyType, Limits, Principal, Scope
from ._protect import Protect, protect
from .auth._authenticator import Authenticator
from .auth._hashing import Argon2Params, Hasher
from .auth._keys import KeyFormat, ParsedKey
from .auth._middleware import KeyAuthMiddleware
from .backends import Decision, LimitBackend, open_limit_backend
from .config._config import Config
from .management._app import SessionVerifier, management_app
from .management._manager import KeyManager
from .ratelimit._middleware import RateLimitMiddleware
from .ratelimit._plans import DEFAULT_PLANS, Plans
from .ratelimit._tokens import EstimatingTokenCounter, TokenCounter
from .stores import KeyStore, StoreEvent, open_key_store

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PLANS",
    "Account",
    "Argon2Params",
    "AuthThrottled",
    "Authenticator",
    "BadRequest",
    "Clock",
    "Config",
    "ConfigurationError",
    "Decision",
    "EstimatingTokenCounter",
    "HTTPError",
    "Hasher",
    "InsufficientScope",
    "InvalidKey",
    "KeyAuthMiddleware",
    "KeyFormat",
    "KeyManager",
    "KeyRecord",
    "KeyStatus",
    "KeyStore",
    "KeyStoreUnavailable",
    "KeyType",
    "KeylimitError",
    "LimitBackend",
    "LimitStorageUnavailable",
    "Limits",
    "ManualClock",
    "MissingKey",
    "NotFound",
    "ParsedKey",
    "Plans",
    "Principal",
    "Protect",
    "RateLimitMiddleware",
    "RateLimited",
    "RequestTimeout",
    "RequestTooLarge",
    "Scope",
    "SessionVerifier",
    "StorageUnavailable",
    "StoreEvent",
    "TokenCounter",
    "management_app",
    "open_key_store",
    "open_limit_backend",
    "protect",
]
