"""The management API served inside Protect: plan changes and revocations reach the next request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from keylimit.stores.redis import RedisKeyStore

from .conftest import ADMIN, MakeProtect, bearer, client, limits, make_key, remaining

ADMIN_HEADERS = bearer(ADMIN)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # A plan of the table
        ({"plan": "starter"}, (600, 1_000_000, 100_000)),
        # Per-account custom limits
        (
            {"plan": "enterprise", "limits": {"requests": 7, "prompt_tokens": 7_000, "completion_tokens": 700}},
            (7, 7_000, 700),
        ),
    ],
)
@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_plan_change_takes_effect_on_the_next_request_and_keeps_the_counters(
    request: pytest.FixtureRequest,
    make_protect: MakeProtect,
    store: str,
    body: dict[str, Any],
    expected: tuple[int, ...],
) -> None:
    url = "memory://" if store == "memory" else str(request.getfixturevalue("redis_url"))
    protect = make_protect(keys_url=url, limits_url=url)
    token = await make_key(protect)

    async with client(protect) as c:
        for _ in range(3):
            before = await c.get("/whoami", headers=bearer(token))
        assert limits(before) == (60, 100_000, 10_000)
        assert remaining(before)[0] == 57

        changed = await c.put("/v1/accounts/acct_1", json=body, headers=ADMIN_HEADERS)
        assert changed.status_code == 200, changed.text
        assert changed.json()["plan"] == body["plan"]

        after = await c.get("/whoami", headers=bearer(token))
        assert after.status_code == 200
        assert limits(after) == expected
        assert remaining(after)[0] == expected[0] - 4  # the three before the change still count


@pytest.mark.redis
async def test_a_revocation_is_refused_at_once_here_and_within_a_second_by_another_instance(
    redis_url: str, make_protect: MakeProtect
) -> None:
    here = make_protect(keys_url=redis_url)
    there = make_protect(keys_url=redis_url)

    async with client(here) as a, client(there) as b:
        created = await a.post("/v1/accounts/acct_1/apiKeys", json={"name": "shared"}, headers=ADMIN_HEADERS)
        assert created.status_code == 201, created.text
        key_id, token = created.json()["id"], created.json()["key"]
        assert (await a.get("/whoami", headers=bearer(token))).status_code == 200
        # Now cached there, for good: the manual clock stands still, so only the event can evict it.
        assert (await b.get("/whoami", headers=bearer(token))).status_code == 200
        assert isinstance(there.store, RedisKeyStore)
        await asyncio.wait_for(there.store._live.wait(), timeout=5)  # its subscriber is listening

        revoked = await a.delete(f"/v1/accounts/acct_1/apiKeys/{key_id}", headers=ADMIN_HEADERS)
        assert revoked.json() == {"id": key_id, "status": "revoked"}
        assert (await a.get("/whoami", headers=bearer(token))).status_code == 401

        deadline = time.monotonic() + 1.0
        while (status := (await b.get("/whoami", headers=bearer(token))).status_code) == 200:
            assert time.monotonic() < deadline, "the other instance still accepts the revoked key after 1 s"
            await asyncio.sleep(0.01)
        assert status == 401
