"""Any other storage the ``limits`` library knows (``redis+sentinel://``, ``memcached://``, …).

The same sliding-window counters as every backend, kept as plain counters of the
storage: one per identity, dimension and window index, read with ``get`` and charged
with ``incr`` (expiring after two windows).

It carries no debt (see ``_window``): a count past the limit is forgotten with its
window, so a response that costs more than the budget left is paid back only for the
two windows its count weighs on. Debt would need a read, a decision and a write of
state shared between processes, which a storage of plain counters cannot make atomic;
the Redis fast path carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

from .._errors import ConfigurationError, LimitStorageUnavailable
from ..redis._url import redact_url
from . import _window
from ._base import DIMENSIONS, Decision, Vector
from ._batch import SettlementBatch

SETTING = "KEYLIMIT_LIMITS_URL"
_NO_DEBT = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
"""No debt, and limits of 0 for the state: nothing is carried forward."""


def _async_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"{SETTING}: not a storage URL: {redact_url(url)!r}")
    scheme = scheme.lower()
    return url if scheme.startswith("async+") else f"async+{scheme}://{rest}"


def _options(url: str) -> dict[str, Any]:
    scheme = urlsplit(url).scheme
    # keylimit's Redis extra installs redis-py; limits' async default for Redis is coredis.
    if "redis" in scheme and importlib.util.find_spec("coredis") is None:
        return {"implementation": "redispy"}
    return {}


class LimitsBackend:
    """Sliding-window counters on a ``limits`` async storage.

    Admission cannot be atomic across the three dimensions on an arbitrary storage: it
    reads the six counters, decides, then increments. Calls for one identity are
    serialised within a process, so a process never over-admits; two processes that
    check the same identity at the same moment may both be admitted where only one
    fits (at most one request's worth per concurrent process). Use the Redis fast path
    (``redis://``, ``redis+cluster://``) where that matters.
    """

    def __init__(self, storage: Any, window: float = 60.0, *, url: str = "") -> None:
        if not window > 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self._storage = storage
        self._url = redact_url(url)
        self._expiry = math.ceil(2 * self.window) + 1
        self._errors: tuple[type[BaseException], ...] = (OSError, *_exception_types(storage))
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._batch = SettlementBatch(self._adjust_many, what=self._url)

    @classmethod
    def from_url(cls, url: str, window: float) -> LimitsBackend:
        """A backend on ``url`` (``scheme://`` or ``async+scheme://``).

        Raises ``ConfigurationError`` naming ``KEYLIMIT_LIMITS_URL`` for an unknown scheme,
        a missing client library or a URL the storage refuses.
        """
        from limits.aio.storage import Storage
        from limits.errors import ConfigurationError as LimitsConfigurationError
        from limits.storage import SCHEMES, storage_from_string  # type: ignore[attr-defined]

        target = _async_url(url)
        scheme = urlsplit(target).scheme
        if scheme not in SCHEMES:
            raise ConfigurationError(
                f"{SETTING}: unknown storage {redact_url(url)!r}: neither keylimit nor the limits library "
                f"has a {scheme.removeprefix('async+')}:// storage"
            )
        try:
            storage = storage_from_string(target, wrap_exceptions=True, **_options(target))
        except LimitsConfigurationError as exc:
            raise ConfigurationError(f"{SETTING}: {redact_url(url)!r}: {_safe(exc, url, target)}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{SETTING}: {redact_url(url)!r} is not a valid storage URL") from exc
        if not isinstance(storage, Storage):  # pragma: no cover - storage_from_string keeps async+ async
            raise ConfigurationError(f"{SETTING}: {redact_url(url)!r} has no async storage in the limits library")
        return cls(storage, window, url=url)

    @property
    def redacted_url(self) -> str:
        """The storage URL without its password."""
        return self._url

    def __repr__(self) -> str:
        return f"LimitsBackend({self._url!r}, window={self.window!r})"

    def _counter(self, key: str, dim: int, index: int) -> str:
        return f"kl:rl:{_safe_key(key)}:{DIMENSIONS[dim]}:{index}"

    def _unavailable(self, exc: BaseException) -> LimitStorageUnavailable:
        return LimitStorageUnavailable(f"rate limit storage {self._url} unavailable ({type(exc).__name__})")

    @contextlib.asynccontextmanager
    async def _serialised(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    async def _state(self, key: str, index: int) -> _window.State:
        names = [self._counter(key, d, i) for i in (index, index - 1) for d in range(3)]
        values = await asyncio.gather(*(self._storage.get(n) for n in names))
        return [float(index), *(float(v) for v in values), *_NO_DEBT]

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        index, _ = _window.position(now, self.window)
        try:
            async with self._serialised(key):
                state = await self._state(key, index)
                decision = _window.decide(state, limits, charge, need, now, self.window)
                if decision.allowed:
                    await asyncio.gather(
                        *(
                            self._storage.incr(self._counter(key, d, index), self._expiry, charge[d])
                            for d in range(3)
                            if charge[d]
                        )
                    )
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return decision

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        index, _ = _window.position(now, self.window)
        try:
            async with self._serialised(key):
                for d in range(3):
                    if delta[d]:
                        await self._add(self._counter(key, d, index), delta[d])
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def _add(self, name: str, amount: int) -> None:
        if amount > 0:
            await self._storage.incr(name, self._expiry, amount)
            return
        amount = min(-amount, int(await self._storage.get(name)))
        if amount <= 0:
            return
        decr = getattr(self._storage, "decr", None)
        if decr is not None:
            await decr(name, amount)
        else:
            await self._storage.incr(name, self._expiry, -amount)

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        index, _ = _window.position(now, self.window)
        try:
            state = await self._state(key, index)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return _window.decide(state, limits, (0, 0, 0), (0, 0, 0), now, self.window)

    async def ping(self) -> None:
        try:
            healthy = await self._storage.check()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if not healthy:
            raise LimitStorageUnavailable(f"rate limit storage {self._url} unavailable")

    def settle(self, key: str, delta: Vector, now: float) -> None:
        if any(delta):
            self._batch.add(key, delta, now)

    async def flush(self) -> None:
        await self._batch.flush()

    async def _adjust_many(self, deltas: dict[str, Vector], now: float) -> None:
        for key, delta in deltas.items():
            await self.adjust(key, delta, now)

    async def aclose(self) -> None:
        await self._batch.aclose()
        self._locks.clear()
        # limits' storages have no close(); release the asyncio client they hold, where there is one.
        holder = getattr(self._storage, "bridge", self._storage)
        client = getattr(holder, "storage", None)
        close = getattr(client, "aclose", None)
        if callable(close):
            with contextlib.suppress(Exception):
                await close()


def _exception_types(storage: Any) -> tuple[type[BaseException], ...]:
    from limits.errors import StorageError

    found: tuple[type[BaseException], ...] = (StorageError,)
    try:
        base = storage.base_exceptions
    except Exception:  # a storage whose client library is missing
        return found
    return found + (base if isinstance(base, tuple) else (base,))


def _safe(exc: BaseException, *urls: str) -> str:
    """``exc``'s message without the URL's password (limits may quote the URI)."""
    text = str(exc)
    for url in urls:
        text = text.replace(url, redact_url(url))
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def _safe_key(identity: str) -> str:
    """``identity`` as printable ASCII without spaces or braces (memcached's key rules), short."""
    safe = quote(identity, safe=":@.-_")
    if len(safe) > 160:
        return "sha256-" + hashlib.sha256(identity.encode()).hexdigest()
    return safe
