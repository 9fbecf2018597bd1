"""Admission through Protect is exact under concurrency, and atomic across dimensions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from keylimit import Limits, Protect

from .conftest import TINY, MakeProtect, assert_openai_error, bearer, chat, client, make_key, remaining

LIMIT_STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("redis_url", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster_url", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


def limits_url(request: pytest.FixtureRequest, store: str) -> str:
    return "memory://" if store == "memory" else str(request.getfixturevalue(store))


@pytest.mark.parametrize("store", LIMIT_STORES)
async def test_a_hundred_concurrent_requests_on_a_plan_of_five_admit_exactly_five(
    request: pytest.FixtureRequest, make_protect: MakeProtect, store: str
) -> None:
    url = limits_url(request, store)
    # Keys in the same Redis as the limits where there is one; the cluster keeps them in memory.
    keys_url = url if store == "redis_url" else "memory://"
    protect = make_protect(limits_url=url, keys_url=keys_url, plans={"free": TINY})
    token = await make_key(protect)

    async with client(protect) as c:
        responses = await asyncio.gather(*(c.get("/whoami", headers=bearer(token)) for _ in range(100)))

    # A storage failure would split the count between the storage and the per-process fallback.
    fell_back = getattr(protect.limits, "degraded", False)
    assert Counter(r.status_code for r in responses) == {200: 5, 429: 95}, f"fell back: {fell_back}"
    for r in responses:
        if r.status_code == 429:
            assert_openai_error(r, 429, "requests", "rate_limit_exceeded")
    admitted = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200)
    assert admitted == [0, 1, 2, 3, 4]


@pytest.mark.redis
async def test_two_protect_instances_sharing_redis_admit_exactly_the_plan(
    redis_url: str, make_protect: MakeProtect
) -> None:
    # Two apps, two Configs: what two server processes behind a load balancer would be.
    one = make_protect(limits_url=redis_url, keys_url=redis_url)
    two = make_protect(limits_url=redis_url, keys_url=redis_url)
    token = await make_key(one)

    async with client(one) as c1, client(two) as c2:
        responses = await asyncio.gather(
            *(c.get("/whoami", headers=bearer(token)) for _ in range(75) for c in (c1, c2))
        )

    assert Counter(r.status_code for r in responses) == {200: 60, 429: 90}  # the free plan: 60 a minute


async def settled(protect: Protect, account: str, *, completion_tokens: int) -> None:
    """Wait (bounded) until a response's settlement, which shared storage writes behind in
    batches, has landed: the account's completion tokens used are ``completion_tokens``."""
    deadline = time.monotonic() + 2.0
    while True:
        await protect.limits.flush()
        decision = await protect.limits.peek(f"acct:{account}", (1, 1, 1), protect.config.clock())
        if decision.used[2] == completion_tokens:
            return
        assert time.monotonic() < deadline, f"settlement not written in 2 s: {decision.used}"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("store", LIMIT_STORES)
async def test_a_request_refused_for_prompt_tokens_consumes_no_request(
    request: pytest.FixtureRequest, make_protect: MakeProtect, store: str
) -> None:
    protect = make_protect(limits_url=limits_url(request, store), plans={"free": Limits(10, 200, 1_000)})
    token = await make_key(protect)

    async with client(protect) as c:

        async def ask(prompt: str) -> httpx.Response:
            return await c.post("/inference/v1/chat/completions", json=chat(prompt), headers=bearer(token))

        first = await ask("Hello there.")
        assert first.status_code == 200, first.text
        before = remaining(first)
        assert before[0] == 9
        usage = first.json()["usage"]
        await settled(protect, "acct_1", completion_tokens=usage["completion_tokens"])

        refused = await ask("word " * 500)
        assert_openai_error(refused, 429, "tokens", "rate_limit_exceeded")
        assert remaining(refused)[0] == 9

        after = await ask("Hello there.")
        assert after.status_code == 200
        # One request more than `first`, not two; and the refused prompt took no tokens: what is
        # spent is `first`'s usage (its prompt charge corrected to it) plus this request's estimate.
        estimate = 200 - before[1]
        assert remaining(after) == (8, 200 - usage["prompt_tokens"] - estimate, 1_000 - usage["completion_tokens"])
