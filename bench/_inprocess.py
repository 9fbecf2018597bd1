"""In-process overhead: each subject's ASGI app called directly (no network, no HTTP parsing)
with the issue's POST /v1/chat/completions, subjects interleaved over rounds. Wall time and
this process's CPU time per request."""

from __future__ import annotations

from typing import Any

from . import _common as c

SUBJECTS = (
    "bare",
    "slowapi-mem",
    "slowapi-redis",
    "keylimit-auth",
    "lean",
    "keylimit-mem",
    "keylimit-redis",
    "redis-rtt",
    "redis-rtt-raw",
    "bare+rtt",
)
ROUND_TRIPS = ("redis-rtt", "redis-rtt-raw")
"""Subjects that are one Redis round trip, not a request: no overhead over the bare app."""


async def rtt_call(url: str) -> tuple[c.Call, c.Call]:
    """One async redis-py EVALSHA round trip (the floor of any Redis limiter), and its closer."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url)
    script = client.register_script("return redis.call('incr', KEYS[1])")

    async def call() -> Any:
        return await script(keys=["bench:rtt"])

    return call, client.aclose


async def raw_rtt_call(url: str) -> tuple[c.Call, c.Call]:
    """The same round trip through keylimit's own client (``keylimit.redis._client``), which the Redis
    backend uses: what is left of the round trip without redis-py's own overhead."""
    from keylimit.redis._client import RespClient, Target, pack

    target = Target.from_url(url)
    if target is None:
        raise SystemExit(f"not a URL keylimit's own Redis client serves: {url}")
    client = RespClient(target)
    sha = await client.execute(pack("SCRIPT", "LOAD", "return redis.call('incr', KEYS[1])"))
    assert isinstance(sha, bytes)
    command = pack("EVALSHA", sha, 1, "bench:rtt")

    async def call() -> Any:
        return await client.execute(command)

    return call, client.aclose


async def build(names: tuple[str, ...] | list[str]) -> tuple[dict[str, c.Call], list[c.Call]]:
    """The calls to time, by subject name, and the closers to run afterwards."""
    calls: dict[str, c.Call] = {}
    closers: list[c.Call] = []
    for name in names:
        subject: c.Subject | None = None
        if name == "bare":
            subject = c.Subject(c.chat_app())
            await c.start(subject)
        elif name == "slowapi-mem":
            subject = c.Subject(c.slowapi_app("memory://"))
        elif name == "slowapi-redis":
            subject = c.Subject(c.slowapi_app(c.RedisServer().url))
        elif name == "keylimit-auth":
            subject = await c.auth_subject()
        elif name == "lean":
            subject = c.Subject(c.lean_app(), c.bearer(c.LEAN_TOKEN))
            await c.start(subject)
        elif name == "keylimit-mem":
            subject = await c.protect_subject("memory://")
        elif name == "keylimit-redis":
            subject = await c.protect_subject(c.RedisServer().url)
        elif name in ROUND_TRIPS:
            call, closer = await (rtt_call if name == "redis-rtt" else raw_rtt_call)(c.RedisServer().url)
            calls[name] = call
            closers.append(closer)
            continue
        elif name == "bare+rtt":
            subject = c.Subject(c.chat_app())
            await c.start(subject)
            await c.check(subject, name)
            rtt, rtt_closer = await raw_rtt_call(c.RedisServer().url)
            calls[name] = _then(_caller(subject), rtt)
            closers += [_closer(subject), rtt_closer]
            continue
        else:
            raise SystemExit(f"unknown in-process subject {name!r} (known: {', '.join(SUBJECTS)})")
        await c.check(subject, name)
        calls[name] = _caller(subject)
        closers.append(_closer(subject))
    return calls, closers


def _caller(subject: c.Subject) -> c.Call:
    app, headers = subject.app, subject.headers

    async def call() -> int:
        return await c.request(app, headers)

    return call


def _then(first: c.Call, second: c.Call) -> c.Call:
    """``first`` then ``second``: for ``bare+rtt``, the bare app's request followed by one
    EVALSHA round trip, what any Redis-backed limiter pays at least per request, in context
    (right after a request's work a round trip costs more than in a tight loop of them)."""

    async def call() -> Any:
        await first()
        return await second()

    return call


def _closer(subject: c.Subject) -> c.Call:
    async def close() -> None:
        await c.close(subject)

    return close


def _overhead(us: dict[str, float]) -> dict[str, float]:
    bare = us.get("bare")
    if bare is None:
        return {}
    return {name: round(v - bare, 2) for name, v in us.items() if name not in ("bare", *ROUND_TRIPS)}


async def run(names: list[str], n: int, rounds: int) -> dict[str, Any]:
    calls, closers = await build(names)
    try:
        per_round, per_round_cpu = await c.interleaved_with_cpu(calls, n, rounds)
    finally:
        for closer in closers:
            await closer()
    us = {name: c.median(xs) for name, xs in per_round.items()}
    cpu = {name: c.median(xs) for name, xs in per_round_cpu.items()}
    return {
        "n": n,
        "rounds": rounds,
        "us_per_request": us,
        "overhead_us": _overhead(us),
        "cpu_us_per_request": cpu,
        "cpu_overhead_us": _overhead(cpu),
        "per_round_us": per_round,
        "per_round_cpu_us": per_round_cpu,
    }
