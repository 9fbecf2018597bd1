"""The limit storage fails under traffic: Protect answers by its failure policy, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from keylimit import ManualClock
from keylimit.backends.guarded import FIRST_PROBE, GuardedBackend
from keylimit.backends.redis import decode_state, state_key
from tests._redis import RedisServer
from tests._sleep import ManualSleep

from .conftest import MakeProtect, assert_openai_error, bearer, client, make_key

pytestmark = pytest.mark.redis

CLIENTS = 4


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, that it may stop and start again."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_fallback_never_answers_500_and_returns_to_redis_after_the_probe(
    private_redis: RedisServer, make_protect: MakeProtect, clock: ManualClock
) -> None:
    protect = make_protect(limits_url=private_redis.url, failure_policy="fallback", redis_timeout=0.5)
    guarded = protect.limits
    assert isinstance(guarded, GuardedBackend)
    guarded.sleep = timer = ManualSleep(clock)
    token = await make_key(protect)
    statuses: list[int] = []
    some_traffic, stopped = asyncio.Event(), asyncio.Event()

    async def traffic(c: httpx.AsyncClient) -> None:
        # Requests before, while and after Redis stops; at least five after.
        after = 0
        while after < 5:
            response = await c.get("/whoami", headers=bearer(token))
            statuses.append(response.status_code)
            if len(statuses) >= 2 * CLIENTS:
                some_traffic.set()
            after += stopped.is_set()
            # In-process requests answered from memory never suspend: let the other tasks run.
            await asyncio.sleep(0)

    async def stop_redis() -> None:
        await some_traffic.wait()
        await asyncio.to_thread(private_redis.stop)
        stopped.set()

    async with client(protect) as c:
        await asyncio.gather(stop_redis(), *(traffic(c) for _ in range(CLIENTS)))
        assert set(statuses) <= {200, 429}
        assert 200 in statuses
        assert guarded.degraded

        await asyncio.to_thread(private_redis.start)
        assert (await c.get("/whoami", headers=bearer(token))).status_code in (200, 429)  # probe not due yet
        assert guarded.degraded
        await timer.wake()  # the probe's own timer: no request needed
        await guarded.join_probe()
        assert not guarded.degraded
        assert timer.asked == [FIRST_PROBE]

        # The restarted Redis is empty: whatever it holds now was counted there.
        answer = await c.get("/whoami", headers=bearer(token))
        assert answer.status_code == 200
    state = decode_state(private_redis.client().get(state_key("acct:acct_1")))
    assert state is not None
    assert state[1] == 1  # requests counted in the current window


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        ("closed", 503),  # refused, as the OpenAI SDK's retrying server_error
        ("open", 200),  # admitted, uncounted
    ],
)
async def test_while_redis_is_down(
    private_redis: RedisServer, make_protect: MakeProtect, policy: str, status: int
) -> None:
    protect = make_protect(limits_url=private_redis.url, failure_policy=policy, redis_timeout=0.5)
    token = await make_key(protect)
    async with client(protect) as c:
        assert (await c.get("/whoami", headers=bearer(token))).status_code == 200
        private_redis.stop()
        answers = await asyncio.gather(*(c.get("/whoami", headers=bearer(token)) for _ in range(CLIENTS)))

    for answer in answers:
        assert answer.status_code == status, answer.text
        if status == 503:
            assert_openai_error(answer, 503, "server_error", "service_unavailable")
            assert int(answer.headers["retry-after"]) >= 1
        else:
            assert answer.json() == {"account": "acct_1"}
