"""What happens when the limit storage fails: policy ``fallback``, ``open`` or ``closed``.

Once the primary fails, requests stop going to it: they are counted per process
(``fallback``), admitted uncounted (``open``, with ``Decision.unknown``) or refused with
``LimitStorageUnavailable`` (``closed``, answered 503). Meanwhile a background probe pings
the primary 1, 2, 4 … (at most 30) seconds apart on the injected clock, started by the
first request after it is due, and the primary is used again as soon as a probe answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from .._clock import Clock, system_clock
from .._errors import ConfigurationError, LimitStorageUnavailable
from . import _window
from ._base import Decision, LimitBackend, Vector
from .memory import MemoryBackend

if TYPE_CHECKING:
    from ..metrics import Metrics

Policy = Literal["fallback", "open", "closed"]
POLICIES: tuple[Policy, ...] = ("fallback", "open", "closed")
FIRST_PROBE = 1.0
MAX_PROBE_GAP = 30.0

logger = logging.getLogger("keylimit.limits")
T = TypeVar("T")

_WHILE_DOWN = {
    "fallback": "counting in this process only",
    "open": "admitting requests without counting",
    "closed": "refusing rate-limited requests (503)",
}


class GuardedBackend:
    """A ``LimitBackend`` that applies the failure policy around ``primary``.

    It never raises anything but ``LimitStorageUnavailable``, and that only under
    policy ``closed``.
    """

    def __init__(
        self,
        primary: LimitBackend,
        *,
        policy: Policy = "fallback",
        clock: Clock = system_clock,
        fallback: LimitBackend | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigurationError(f"KEYLIMIT_FAILURE_POLICY: must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.window = primary.window
        self.policy: Policy = policy
        self._primary = primary
        self._clock = clock
        self._fallback = fallback if fallback is not None else MemoryBackend(primary.window)
        self._where: str = getattr(primary, "redacted_url", None) or repr(primary)
        self._down_since: float | None = None
        self._gap = FIRST_PROBE
        self._next_probe = 0.0
        self._probe_task: asyncio.Task[bool] | None = None
        self.metrics: Metrics | None = None

    def __repr__(self) -> str:
        return f"GuardedBackend({self._primary!r}, policy={self.policy!r})"

    @property
    def degraded(self) -> bool:
        """True while the primary is considered down."""
        return self._down_since is not None

    @property
    def next_probe_at(self) -> float | None:
        """Clock time from which the next probe is due; None while the primary is up."""
        return None if self._down_since is None else self._next_probe

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        return await self._route(
            lambda b: b.acquire(key, limits, charge, need, now),
            lambda: _unknown(limits, need, now, self.window),
        )

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        return await self._route(lambda b: b.adjust(key, delta, now), lambda: None)

    def settle(self, key: str, delta: Vector, now: float) -> None:
        if self._down_since is None:
            self._primary.settle(key, delta, now)
        elif self.policy == "fallback":
            self._fallback.settle(key, delta, now)

    async def flush(self) -> None:
        try:
            await self._primary.flush()
        except Exception as exc:
            logger.warning("could not flush settlements to %s (%s)", self._where, type(exc).__name__)

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        return await self._route(
            lambda b: b.peek(key, limits, now),
            lambda: _unknown(limits, (0, 0, 0), now, self.window),
        )

    async def ping(self) -> None:
        """Raise ``LimitStorageUnavailable`` when requests would be refused (policy closed, primary down)."""

        async def nothing(b: LimitBackend) -> None:
            return None

        await self._route(lambda b: b.ping(), lambda: None, degraded=nothing)

    async def _route(
        self,
        call: Callable[[LimitBackend], Awaitable[T]],
        uncounted: Callable[[], T],
        *,
        degraded: Callable[[LimitBackend], Awaitable[T]] | None = None,
    ) -> T:
        if self._down_since is None:
            try:
                return await call(self._primary)
            except Exception as exc:
                if self.metrics is not None:
                    self.metrics.storage_error("limits")
                self._outage(exc)
        else:
            self._probe_if_due()
        if self.policy == "closed":
            raise LimitStorageUnavailable(f"rate limit storage {self._where} unavailable")
        if self.policy == "open":
            return uncounted()
        try:
            return await (degraded or call)(self._fallback)
        except Exception as exc:
            logger.error("fallback rate limit backend failed (%s); admitting uncounted", type(exc).__name__)
            return uncounted()

    def _outage(self, exc: Exception) -> None:
        if self._down_since is not None:
            return
        now = self._clock()
        self._down_since = now
        self._gap = FIRST_PROBE
        self._next_probe = now + self._gap
        # Our own messages carry no secret and name the storage; anything else is named by its class only.
        if isinstance(exc, LimitStorageUnavailable) and str(exc).startswith("rate limit storage"):
            reason = what = str(exc)
        else:
            reason = type(exc).__name__
            what = f"rate limit storage {self._where} unavailable ({reason})"
        logger.warning(
            "%s: %s until it answers again",
            what,
            _WHILE_DOWN[self.policy],
            extra={"storage": "limits", "state": "down", "reason": reason, "policy": self.policy},
        )

    def _probe_if_due(self) -> None:
        if self._probe_task is None and self._clock() >= self._next_probe:
            self._probe_task = asyncio.get_running_loop().create_task(self.probe())
            self._probe_task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[bool]) -> None:
        if self._probe_task is task:
            self._probe_task = None

    async def probe(self) -> bool:
        """Ping the primary now; True (and the primary in use again) if it answers."""
        if self._down_since is None:
            return True
        try:
            await self._primary.ping()
        except Exception:
            self._gap = min(self._gap * 2, MAX_PROBE_GAP)
            self._next_probe = self._clock() + self._gap
            return False
        down_for = self._clock() - self._down_since
        self._down_since = None
        logger.info(
            "rate limit storage %s answers again after %.0fs; using it again",
            self._where,
            down_for,
            extra={"storage": "limits", "state": "up", "down_for": down_for},
        )
        return True

    async def join_probe(self) -> None:
        """Wait for the probe in flight, if any (for tests and shutdown)."""
        if self._probe_task is not None:
            await asyncio.shield(self._probe_task)

    async def aclose(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None
        await self._primary.aclose()
        await self._fallback.aclose()


def _unknown(limits: Vector, need: Vector, now: float, window: float) -> Decision:
    """Admitted without counting: no use known, the full limits left."""
    index, _ = _window.position(now, window)
    return Decision(
        allowed=True,
        limits=limits,
        used=(0.0, 0.0, 0.0),
        remaining=limits,
        reset_at=(index + 1) * window,
        retry_after=0.0,
        exceeded=None,
        requested=need,
        window=window,
        unknown=True,
    )
