"""What a request costs Redis: round trips counted on the client side (every
``send_packed_command`` of redis-py's sync and asyncio connections, and every write of
keylimit's own client: a pipeline counts once) and server CPU from ``INFO commandstats``
(the sum of ``usec`` over requests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _common as c


@contextlib.contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Counts the sends of every redis-py connection (sync ones too: slowapi's storage is sync)
    and the writes of keylimit's own client (``keylimit.redis._client``)."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    from keylimit.redis._client import RespProtocol

    count = [0]
    async_send: Any = aconn.AbstractConnection.send_packed_command
    sync_send: Any = sconn.AbstractConnection.send_packed_command
    own_write: Any = RespProtocol.write

    async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await async_send(self, *args, **kwargs)

    def counted_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return sync_send(self, *args, **kwargs)

    def counted_own(self: Any, data: bytes) -> None:
        count[0] += 1
        own_write(self, data)

    aconn.AbstractConnection.send_packed_command = counted_async  # type: ignore[method-assign]
    sconn.AbstractConnection.send_packed_command = counted_sync  # type: ignore[method-assign]
    RespProtocol.write = counted_own  # type: ignore[method-assign]
    try:
        yield count
    finally:
        aconn.AbstractConnection.send_packed_command = async_send  # type: ignore[method-assign]
        sconn.AbstractConnection.send_packed_command = sync_send  # type: ignore[method-assign]
        RespProtocol.write = own_write  # type: ignore[method-assign]


def commandstats(server: c.RedisServer) -> dict[str, dict[str, float]]:
    """``{command: {"calls": n, "usec": total}}`` from ``INFO commandstats``."""
    out: dict[str, dict[str, float]] = {}
    for name, value in server.info("commandstats").items():
        fields = dict(item.split("=", 1) for item in value.split(","))
        out[name.removeprefix("cmdstat_")] = {"calls": float(fields["calls"]), "usec": float(fields["usec"])}
    return out


SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def process_cpu(server: c.RedisServer) -> float:
    cpu = server.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def measure(name: str, subject: c.Subject, server: c.RedisServer, n: int) -> dict[str, Any]:
    await c.check(subject, name)
    for _ in range(200):
        await c.request(subject.app, subject.headers)
    server.command("CONFIG", "RESETSTAT")
    cpu0 = process_cpu(server)
    with counting_round_trips() as count:
        for _ in range(n):
            await c.request(subject.app, subject.headers)
    cpu = process_cpu(server) - cpu0
    stats = {k: v for k, v in commandstats(server).items() if v["calls"] and not k.startswith(("config", "info"))}
    # A script's usec include the commands it calls, which commandstats also lists on their own.
    scripts = sum(v["usec"] for k, v in stats.items() if k in SCRIPT_COMMANDS)
    direct = sum(v["usec"] for k, v in stats.items() if k not in SCRIPT_COMMANDS)
    return {
        "requests": n,
        "round_trips_per_request": round(count[0] / n, 3),
        "commands_per_request": round(sum(v["calls"] for v in stats.values()) / n, 3),
        "commandstats_us_per_request": round((scripts if scripts else direct) / n, 2),
        "redis_process_cpu_us_per_request": round(cpu * 1e6 / n, 2),
        "commands": {
            k: {"per_request": round(v["calls"] / n, 3), "usec_per_call": round(v["usec"] / v["calls"], 2)}
            for k, v in stats.items()
        },
    }


async def run(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    server = c.RedisServer()
    slow = c.Subject(c.slowapi_app(server.url))
    out["slowapi-redis"] = await measure("slowapi-redis", slow, server, n)
    server.stop()
    server = c.RedisServer()
    keylimit = await c.protect_subject(server.url)
    try:
        out["keylimit-redis"] = await measure("keylimit-redis", keylimit, server, n)
    finally:
        await c.close(keylimit)
        server.stop()
    return out
