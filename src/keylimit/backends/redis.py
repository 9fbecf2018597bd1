"""``redis://``, ``rediss://``, ``redis+cluster://``: the fast path, one script per admission.

An identity's whole state is one 104-byte string ``kl:lim:{<identity>}`` (the braces are
the cluster hash tag): the window index, the current and previous counts, the debts and
the limits of the three dimensions (``_window.State``) as thirteen little-endian doubles,
with a TTL of about two windows plus those its debt takes to pay back (set when the state
enters a window; later writes overwrite the same bytes with ``SETRANGE``, which keeps it,
on any Redis that runs Lua scripts). A 56-byte state (the counts alone, as stored before
debt was carried) reads as the same counts with no debt. The acquire script rolls, checks and
charges it atomically and returns the rolled counts from before the charge; the
``Decision`` is then computed in Python by ``_window``, the same code as the memory
backend's, with the same floating-point operations as the script, so both agree exactly.
"""

from __future__ import annotations

import contextlib
import math
import struct
import sys
from typing import TYPE_CHECKING

from .._errors import LimitStorageUnavailable
from ..redis._client import RespClient, RespFailure, Target
from ..redis._url import redact_url, redis_client
from . import _window
from ._base import Decision, Vector
from ._batch import SettlementBatch
from ._redis_clients import Commands, OwnClient, RedisPy, Script

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

SETTING = "KEYLIMIT_LIMITS_URL"

_ACQUIRE_ARGS = struct.Struct("<12d")
_ADJUST_ARGS = struct.Struct("<6d")
STATE = struct.Struct("<13d")
"""The stored state: window index, current requests/prompt/completion, previous ones,
the debts and the limits they are paid back at (``_window.State``)."""
_OLD_STATE = struct.Struct("<7d")
"""The state before debt was carried: read as the same counts with no debt."""
_MAX_DOUBLE = sys.float_info.max

# Shared by both scripts, after each has unpacked its one argument (little-endian
# doubles: cheaper to send and to read than a dozen decimal strings) into locals, the
# first three being ``now``, ``window`` and ``ttl`` (ms). The state of KEYS[1] (one
# string of thirteen doubles, as ``STATE``, or of the first seven; anything else there
# counts as no state) is rolled to the window of ``now`` into ``index``, the counts
# ``r p c`` (current) and ``R P C`` (previous), the debts ``Dr Dp Dc`` and the limits
# ``Lr Lp Lc`` they are paid back at, as ``_window.roll`` does it, operation for
# operation; ``moved`` says whether the state enters a new window (or is new). A caller
# whose clock lags behind the stored window counts in the stored window. Before it,
# the acquire script sets ``l1 l2 l3`` (the limits to roll with when none are stored)
# and the adjust script sets them to -1 (none).
_ROLL = """
local index = math.floor(now / window)
local frac = (now - index * window) / window
local raw = redis.call('GET', KEYS[1])
local held = nil
local r, p, c, R, P, C = 0, 0, 0, 0, 0, 0
local Dr, Dp, Dc, Lr, Lp, Lc = 0, 0, 0, -1, -1, -1
local moved = true
if raw and (#raw == 104 or #raw == 56) then
  local h, a1, a2, a3, b1, b2, b3
  if #raw == 104 then
    h, a1, a2, a3, b1, b2, b3, Dr, Dp, Dc, Lr, Lp, Lc = struct.unpack('<ddddddddddddd', raw)
  else
    h, a1, a2, a3, b1, b2, b3 = struct.unpack('<ddddddd', raw)
  end
  held = h
  if h >= index then
    index = h
    moved = false
    r, p, c, R, P, C = a1, a2, a3, b1, b2, b3
  else
    local function clamp(x, L)
      if x <= 0 then return 0 elseif x >= L then return L end
      return x
    end
    local function roll(x, D, L, k)
      if L <= 0 then
        if k == 1 then return 0, x, 0 end
        return 0, 0, 0
      end
      if x > L then
        D = D + (x - L)
        x = L
      end
      if D > 0 then
        local prev = x
        if k ~= 1 then prev = clamp(D - (k - 2) * L, L) end
        local cur = clamp(D - (k - 1) * L, L)
        D = D - k * L
        if D < 0 then D = 0 end
        return cur, prev, D
      end
      if k == 1 then return 0, x, 0 end
      return 0, 0, 0
    end
    local k = index - h
    if Lr < 0 then Lr = l1 end
    if Lp < 0 then Lp = l2 end
    if Lc < 0 then Lc = l3 end
    r, R, Dr = roll(a1, Dr, Lr, k)
    p, P, Dp = roll(a2, Dp, Lp, k)
    c, C, Dc = roll(a3, Dc, Lc, k)
  end
end
"""

# Writes the state. The TTL is set when the state enters a window, its first write
# there: the state matters until the end of the next window, and for as many windows
# more as its debt takes to pay back. Later writes in the window overwrite the same
# 104 bytes in place (SETRANGE), which keeps it, unless a count has passed its limit:
# then the expiry is set again, for the debt that count becomes.
_STORE = """
local over = (Lr > 0 and r > Lr) or (Lp > 0 and p > Lp) or (Lc > 0 and c > Lc)
local life = ttl
if over or (moved and (Dr > 0 or Dp > 0 or Dc > 0)) then
  local function windows(x, D, L)
    if L <= 0 then return 0 end
    if x > L then D = D + (x - L) end
    return D / L
  end
  local extra = math.max(windows(r, Dr, Lr), windows(p, Dp, Lp), windows(c, Dc, Lc))
  life = math.min(ttl + math.ceil(math.min(extra, 1e9)) * window * 1000, 1e15)
end
local state = struct.pack('<ddddddddddddd', index, r, p, c, R, P, C, Dr, Dp, Dc, Lr, Lp, Lc)
if moved then
  redis.call('SET', KEYS[1], state, 'PX', string.format('%d', life))
else
  redis.call('SETRANGE', KEYS[1], 0, state)
  if over then redis.call('PEXPIRE', KEYS[1], string.format('%d', life)) end
end
"""

# ARGV[1]: now, window, ttl ms, limits x3, charge x3, need x3.
# Returns '1' (admitted) or '0' followed by the rolled state from before the charge
# (as ``STATE``): exact, and one bulk reply. The comparison repeats ``_window.decide``
# operation for operation, so that Python reaches the same verdict from the returned
# counts. A state that enters a window takes the limits of the admission.
ACQUIRE = (
    "local now, window, ttl, l1, l2, l3, c1, c2, c3, n1, n2, n3 = struct.unpack('<dddddddddddd', ARGV[1])\n"
    + _ROLL
    + """
if moved then Lr, Lp, Lc = l1, l2, l3 end
local out = struct.pack('<ddddddddddddd', index, r, p, c, R, P, C, Dr, Dp, Dc, Lr, Lp, Lc)
local w = 1 - frac
if (n1 > 0 and R * w + r + n1 > l1) or (n2 > 0 and P * w + p + n2 > l2) or (n3 > 0 and C * w + c + n3 > l3) then
  return '0' .. out
end
r, p, c = r + c1, p + c2, c + c3
"""
    + _STORE
    + """
return '1' .. out
"""
)

# ARGV[1]: now, window, ttl ms, delta x3. A refund pays back debt first; a count never
# goes below zero (``_window.apply_delta``).
ADJUST = (
    "local now, window, ttl, d1, d2, d3 = struct.unpack('<dddddd', ARGV[1])\n"
    + "local l1, l2, l3 = -1, -1, -1\n"
    + _ROLL
    + """
if d1 == 0 and d2 == 0 and d3 == 0 then return 0 end
if (d1 < 0 and Dr > 0) or (d2 < 0 and Dp > 0) or (d3 < 0 and Dc > 0) then
  local function refund(d, D)
    if d >= 0 or D <= 0 then return d, D end
    local left = D + d
    if left >= 0 then return 0, left end
    return left, 0
  end
  d1, Dr = refund(d1, Dr)
  d2, Dp = refund(d2, Dp)
  d3, Dc = refund(d3, Dc)
end
if d1 ~= 0 then r = math.max(0, r + d1) end
if d2 ~= 0 then p = math.max(0, p + d2) end
if d3 ~= 0 then c = math.max(0, c + d3) end
if held == nil and r + p + c == 0 then return 0 end
"""
    + _STORE
    + """
return 1
"""
)


def _double(x: float) -> float:
    return x if -_MAX_DOUBLE <= x <= _MAX_DOUBLE else (_MAX_DOUBLE if x > 0 else -_MAX_DOUBLE)


def _pack(form: struct.Struct, *values: float) -> bytes:
    try:
        return form.pack(*values)
    except (struct.error, OverflowError):  # an integer beyond any double: the largest double
        return form.pack(*map(_double, values))


def state_key(identity: str) -> str:
    """The key of ``identity``'s state. Braces are escaped so that the hash tag stays the identity's."""
    tag = identity.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"kl:lim:{{{tag}}}"


def decode_state(raw: bytes | None) -> list[float] | None:
    """A stored state as ``_window.State``; None for none (or anything else)."""
    if raw is None:
        return None
    if len(raw) == STATE.size:
        return list(STATE.unpack(raw))
    if len(raw) == _OLD_STATE.size:
        return [*_OLD_STATE.unpack(raw), 0.0, 0.0, 0.0, _window.UNKNOWN, _window.UNKNOWN, _window.UNKNOWN]
    return None


_ACQUIRE = Script(ACQUIRE)
_ADJUST = Script(ADJUST)


class RedisBackend:
    """Sliding-window counters in Redis: admission and settlement are one command each.

    ``client`` is keylimit's ``RespClient`` (what ``from_url`` opens for a standalone
    server) or a redis-py asyncio client (standalone or ``RedisCluster``).
    """

    def __init__(
        self, client: RespClient | Redis | RedisCluster, window: float = 60.0, *, url: str = "redis://"
    ) -> None:
        if not window > 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self._url = redact_url(url)
        self._ttl_ms = math.ceil(2 * self.window * 1000) + 1000
        self._redis: Commands = OwnClient(client) if isinstance(client, RespClient) else RedisPy(client)
        self._errors = self._redis.errors
        self._batch = SettlementBatch(self._adjust_many, what=self._url)

    @classmethod
    def from_url(cls, url: str, window: float, *, timeout: float = 2.0) -> RedisBackend:
        """keylimit's own client for a standalone server; redis-py for a cluster, and for a
        URL with query parameters (TLS options and the like), which only redis-py reads."""
        target = Target.from_url(url)
        if target is None:
            return cls(redis_client(url, timeout=timeout, setting=SETTING), window, url=url)
        return cls(RespClient(target, timeout=timeout), window, url=url)

    @property
    def redacted_url(self) -> str:
        """The storage URL without its password."""
        return self._url

    def __repr__(self) -> str:
        return f"RedisBackend({self._url!r}, window={self.window!r})"

    def _unavailable(self, exc: BaseException) -> LimitStorageUnavailable:
        # A class name or a Redis error code only: a Redis error message may quote the command and its keys.
        what = f"{type(exc).__name__}: {exc.reason}" if isinstance(exc, RespFailure) else type(exc).__name__
        return LimitStorageUnavailable(f"rate limit storage {self._url} unavailable ({what})")

    async def acquire(self, key: str, limits: Vector, charge: Vector, need: Vector, now: float) -> Decision:
        args = _pack(_ACQUIRE_ARGS, now, self.window, self._ttl_ms, *limits, *charge, *need)
        try:
            reply: bytes = await self._redis.run(_ACQUIRE, state_key(key), args)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        state = list(STATE.unpack_from(reply, 1))
        decision = _window.decide(state, limits, charge, need, now, self.window)
        if decision.allowed != (reply[:1] == b"1"):  # pragma: no cover - same arithmetic on both sides
            raise LimitStorageUnavailable(f"rate limit storage {self._url}: script and backend disagree")
        return decision

    async def adjust(self, key: str, delta: Vector, now: float) -> None:
        if not any(delta):
            return
        args = _pack(_ADJUST_ARGS, now, self.window, self._ttl_ms, *delta)
        try:
            await self._redis.run(_ADJUST, state_key(key), args)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def settle(self, key: str, delta: Vector, now: float) -> None:
        if any(delta):
            self._batch.add(key, delta, now)

    async def flush(self) -> None:
        await self._batch.flush()

    async def _adjust_many(self, deltas: dict[str, Vector], now: float) -> None:
        """One round trip for the whole batch."""
        head = (now, self.window, self._ttl_ms)
        await self._redis.run_many(
            _ADJUST, {state_key(key): _pack(_ADJUST_ARGS, *head, *delta) for key, delta in deltas.items()}
        )

    async def peek(self, key: str, limits: Vector, now: float) -> Decision:
        try:
            stored = decode_state(await self._redis.get(state_key(key)))
        except self._errors as exc:
            raise self._unavailable(exc) from None
        index, _ = _window.position(now, self.window)
        if stored is None:
            state = _window.new_state(index)
        else:
            state = stored
            _window.roll(state, index, limits)
        return _window.decide(state, limits, (0, 0, 0), (0, 0, 0), now, self.window)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def aclose(self) -> None:
        await self._batch.aclose()
        with contextlib.suppress(*self._errors):
            await self._redis.aclose()
