"""What happens when the limit storage fails: policy ``fallback``, ``open`` or ``closed``.

Once the primary fails, requests stop going to it: they are counted per process
(``fallback``), admitted uncounted (``open``, with ``Decision.unknown``) or refused with
``LimitStorageUnavailable`` (``closed``, answered 503). From that first failure a
background task probes the primary 1, 2, 4 … (at most 30) seconds apart whether or not
requests arrive, and the primary is used again from the moment a probe answers.

Only ``LimitStorageUnavailable`` (connection, timeout, protocol: what the backends raise
when storage fails) declares an outage. Anything else is a bug: it is logged once with its
traceback, and that one call is answered by the policy without declaring the storage down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from .._clock import Clock, system_clock
from .._diagnostics import get_logger, report_bug
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

Sleep = Callable[[float], Awaitable[object]]
"""How the probe waits between attempts (``asyncio.sleep``; tests pass one they control)."""

logger = get_logger("keylimit.limits")
T = TypeVar("T")

_WHILE_DOWN = {
    "fallback": "counting in this process only",
    "open": "admitting requests without counting",
    "closed": "refusing rate-limited requests (503)",
}


class GuardedBackend:
    """A ``LimitBackend`` that applies the failure policy around ``primary``.

    It never raises anything but ``LimitStorageUnavailable``, and that only under
    policy ``closed``. It may be built before any event loop runs: the probe task starts
    on the loop of the request that meets the first failure (again on a later loop if
    that one has ended), and ``aclose()`` stops it.
    """

    def __init__(
        self,
        primary: LimitBackend,
        *,
        policy: Policy = "fallback",
        clock: Clock = system_clock,
        fallback: LimitBackend | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigurationError(f"KEYLIMIT_FAILURE_POLICY: must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.window = primary.window
        self.policy: Policy = policy
        self.sleep = sleep
        self._primary = primary
        self._clock = clock
        self._fallback = fallback if fallback is not None else MemoryBackend(primary.window)
        self._where: str = getattr(primary, "redacted_url", None) or repr(primary)
        self._down_since: float | None = None
        self._gap = FIRST_PROBE
        self._next_probe = 0.0
        self._probing: asyncio.Task[None] | None = None
        self.metrics: Metrics | None = None

    def __repr__(self) -> str:
        return f"GuardedBackend({self._primary!r}, policy={self.policy!r})"

    @property
    def degraded(self) -> bool:
        """True while the primary is considered down."""
        return self._down_since is not None

    @property
    def next_probe_at(self) -> float | None:
        """Clock time of the next probe; None while the primary is up."""
        return None if self._down_since is None else self._next_probe

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        return await self._route(
            "acquire",
            lambda b: b.acquire(key, limits, charge, need, now),
            lambda: _unknown(limits, need, now, self.window),
        )

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        return await self._route("adjust", lambda b: b.adjust(key, delta, now), lambda: None)

    def settle(self, key: str, delta: Vector, now: float) -> None:
        if self._down_since is None:
            backend, where = self._primary, self._where
        elif self.policy == "fallback":
            backend, where = self._fallback, "the fallback rate limit backend"
        else:
            return
        try:
            backend.settle(key, delta, now)
        except Exception as exc:  # settle never raises by contract: a bug; the settlement is dropped
            report_bug(logger, f"settle on {where}", exc)

    async def flush(self) -> None:
        try:
            await self._primary.flush()
        except LimitStorageUnavailable as exc:
            logger.warning("could not flush settlements to %s (%s)", self._where, type(exc).__name__)
        except Exception as exc:
            report_bug(logger, f"flush on {self._where}", exc)

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        return await self._route(
            "peek",
            lambda b: b.peek(key, limits, now),
            lambda: _unknown(limits, (0, 0, 0), now, self.window),
        )

    async def ping(self) -> None:
        """Raise ``LimitStorageUnavailable`` when requests would be refused (policy closed, primary down)."""

        async def nothing(b: LimitBackend) -> None:
            return None

        await self._route("ping", lambda b: b.ping(), lambda: None, degraded=nothing)

    async def _route(
        self,
        what: str,
        call: Callable[[LimitBackend], Awaitable[T]],
        uncounted: Callable[[], T],
        *,
        degraded: Callable[[LimitBackend], Awaitable[T]] | None = None,
    ) -> T:
        if self._down_since is None:
            try:
                return await call(self._primary)
            except LimitStorageUnavailable as exc:
                if self.metrics is not None:
                    self.metrics.storage_error("limits")
                self._outage(exc)
            except Exception as exc:
                report_bug(logger, f"{what} on {self._where}", exc)
        else:
            self._keep_probing()
        if self.policy == "closed":
            raise LimitStorageUnavailable(f"rate limit storage {self._where} unavailable")
        if self.policy == "open":
            return uncounted()
        try:
            return await (degraded or call)(self._fallback)
        except Exception as exc:
            report_bug(logger, f"{what} on the fallback rate limit backend; admitting uncounted", exc)
            return uncounted()

    def _outage(self, exc: LimitStorageUnavailable) -> None:
        if self._down_since is not None:
            return
        now = self._clock()
        self._down_since = now
        self._gap = FIRST_PROBE
        self._next_probe = now + self._gap
        # Our own messages carry no secret and name the storage; anything else is named by its class only.
        if str(exc).startswith("rate limit storage"):
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
        self._keep_probing()

    def _keep_probing(self) -> None:
        """Start the probe task unless one runs on this loop (a loop that ended took its task along)."""
        task = self._probing
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._probing = loop.create_task(self._probe_until_it_answers())

    async def _probe_until_it_answers(self) -> None:
        while self._down_since is not None:
            self._next_probe = self._clock() + self._gap
            await self.sleep(self._gap)
            if await self.probe():
                return

    async def probe(self) -> bool:
        """Ping the primary now; True (and the primary in use again) if it answers."""
        if self._down_since is None:
            return True
        try:
            await self._primary.ping()
        except Exception as exc:
            if not isinstance(exc, LimitStorageUnavailable):
                report_bug(logger, f"ping on {self._where}", exc)
            self._gap = min(self._gap * 2, MAX_PROBE_GAP)
            self._next_probe = self._clock() + self._gap
            return False
        if self._down_since is None:  # another probe answered first
            return True
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
        """Wait until the probing ends: the primary answered, or ``aclose()`` stopped it."""
        task = self._probing
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task})  # neither raises if aclose() cancelled it nor cancels it

    async def aclose(self) -> None:
        task, self._probing = self._probing, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait({task})
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
