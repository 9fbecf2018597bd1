"""Exceptions, and the one place that turns each into its documented HTTP answer.

KeylimitError
├── ConfigurationError        bad setting (also a ValueError); raised at start-up
├── StorageUnavailable        a store did not answer          → 503 service_unavailable
│   ├── KeyStoreUnavailable
│   └── LimitStorageUnavailable
├── HTTPError                 anything answered to a client with a status and an OpenAI body
│   ├── MissingKey            → 401 missing_api_key
│   ├── InvalidKey            → 401 invalid_api_key (one body for every reason)
│   ├── AuthThrottled         → 429 too_many_auth_failures (no longer raised; kept for imports)
│   ├── InsufficientScope     → 403 insufficient_scope
│   ├── NotFound              → 404 not_found
│   ├── BadRequest            → 400 invalid_request
│   ├── RequestTooLarge       → 413 request_too_large
│   ├── UnsupportedEncoding   → 415 unsupported_content_encoding
│   ├── RequestTimeout        → 408 request_timeout
│   └── RateLimited           → 429 rate_limit_exceeded
└── (StorageUnavailable is answered as HTTPError through ``http_error_for``)
"""

from __future__ import annotations

import json
import math


class KeylimitError(Exception):
    """Base of every exception keylimit raises on purpose."""


class ConfigurationError(KeylimitError, ValueError):
    """A setting is invalid. The message names the setting."""


class HTTPError(KeylimitError):
    """An error with a documented HTTP answer in OpenAI's error shape."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    param: str | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.retry_after is not None:
            out.append((b"retry-after", str(retry_after_seconds(self.retry_after)).encode()))
            out.append((b"retry-after-ms", str(max(1, math.ceil(self.retry_after * 1000))).encode()))
        return out

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


class MissingKey(HTTPError):
    status, type, code = 401, "invalid_request_error", "missing_api_key"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b"Bearer"), *super().headers()]


class InvalidKey(HTTPError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"

    def __init__(self) -> None:
        # One message for malformed, unknown, wrong-secret, revoked and expired keys.
        super().__init__("Incorrect API key provided. Check the key, or create a new one.")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b'Bearer error="invalid_token"')]


class AuthThrottled(HTTPError):
    """No longer raised: failed authentications lock no address out. Kept so that code
    importing it still works."""

    status, type, code = 429, "invalid_request_error", "too_many_auth_failures"

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "Too many failed authentication attempts from this address. "
            f"Try again in {retry_after_seconds(retry_after)}s.",
            retry_after=retry_after,
        )


class InsufficientScope(HTTPError):
    status, type, code = 403, "permission_error", "insufficient_scope"


class NotFound(HTTPError):
    status, type, code = 404, "invalid_request_error", "not_found"


class BadRequest(HTTPError):
    status, type, code = 400, "invalid_request_error", "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RequestTooLarge(HTTPError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedEncoding(HTTPError):
    status, type, code = 415, "invalid_request_error", "unsupported_content_encoding"


class RequestTimeout(HTTPError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class RateLimited(HTTPError):
    """Over a plan limit. ``type`` is ``requests`` or ``tokens`` as OpenAI's are."""

    status, code = 429, "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.type = kind


class StorageUnavailable(KeylimitError):
    """A store did not answer (connection refused, timeout, I/O error)."""

    what = "storage"


class KeyStoreUnavailable(StorageUnavailable):
    what = "key store"


class LimitStorageUnavailable(StorageUnavailable):
    what = "rate limit storage"


class ServiceUnavailable(HTTPError):
    status, type, code = 503, "server_error", "service_unavailable"


def http_error_for(exc: StorageUnavailable, retry_after: float = 1.0) -> ServiceUnavailable:
    return ServiceUnavailable(f"The {exc.what} is unavailable. Try again shortly.", retry_after=retry_after)


def retry_after_seconds(seconds: float) -> int:
    """``Retry-After``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        separators=(",", ":"),
    ).encode()
