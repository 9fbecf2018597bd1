"""Prometheus metrics and refusal logs through ``Protect``: what an operator scraping
``KEYLIMIT_METRICS_PATH`` or reading ``keylimit.auth`` / ``keylimit.limits`` sees."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from keylimit import Config, Limits, ManualClock, Protect
from keylimit._models import Scope
from keylimit.auth._hashing import CHEAPEST
from keylimit.config._build import key_manager
from keylimit.demo import MODEL_ID, demo_model_app

START = 1_700_000_040.0
PLANS = {"free": Limits(3, 40, 5), "big": Limits(100, 100_000, 100_000)}


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"account": request.user.account_id})


def make(**settings: Any) -> Protect:
    app = Starlette(routes=[Route("/whoami", whoami, methods=["GET", "POST"]), Mount("/v1", demo_model_app())])
    defaults: dict[str, Any] = {
        "keys_url": "memory://",
        "argon2": CHEAPEST,
        "plans": PLANS,
        "metrics_path": "/metrics",
        "clock": ManualClock(START),
    }
    return Protect(app, Config(**{**defaults, **settings}))


def client(protect: Protect) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(protect), base_url="http://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def chat(prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}


async def scrape(c: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels; the endpoint needs no key."""
    response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_every_refusal_reason_and_admission_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    protect = make()
    manager = key_manager(protect.config, protect.store)
    _, full = await manager.create_key("acme", "full")
    _, reader = await manager.create_key("acme", "reader", scopes=[Scope.READ])
    caplog.set_level(logging.INFO, logger="keylimit")
    async with client(protect) as c:
        assert (await c.get("/whoami")).status_code == 401  # missing_key
        assert (await c.post("/whoami", headers=bearer(reader))).status_code == 403  # scope
        ok = await c.post("/v1/chat/completions", json=chat("hi", 8), headers=bearer(full))
        assert ok.status_code == 200
        usage = ok.json()["usage"]
        assert usage["completion_tokens"] > 5  # the plan's completion budget is spent
        refused = await c.post("/v1/chat/completions", json=chat("hi"), headers=bearer(full))
        assert refused.status_code == 429  # completion_tokens
        long = await c.post("/v1/chat/completions", json=chat("word " * 200), headers=bearer(full))
        assert long.status_code == 429  # prompt_tokens
        for _ in range(2):  # refusals consumed nothing: two more requests fit
            assert (await c.get("/whoami", headers=bearer(full))).status_code == 200
        assert (await c.get("/whoami", headers=bearer(full))).status_code == 429  # requests: 3 per minute
        for _ in range(3):  # failures refuse nothing but themselves: no address is locked out
            assert (await c.get("/whoami", headers=bearer("forii_sk_not_a_key"))).status_code == 401  # invalid_key
        samples = await scrape(c)

    refused_total = "keylimit_requests_refused_total"
    assert value(samples, refused_total, reason="missing_key", plan="none") == 1
    assert value(samples, refused_total, reason="invalid_key", plan="none") == 3
    assert value(samples, refused_total, reason="scope", plan="free") == 1
    assert value(samples, refused_total, reason="completion_tokens", plan="free") == 1
    assert value(samples, refused_total, reason="prompt_tokens", plan="free") == 1
    assert value(samples, refused_total, reason="requests", plan="free") == 1
    assert value(samples, "keylimit_requests_admitted_total", plan="free") == 3
    charged = "keylimit_tokens_charged_total"
    assert value(samples, charged, dimension="prompt_tokens", plan="free") == usage["prompt_tokens"]
    assert value(samples, charged, dimension="completion_tokens", plan="free") == usage["completion_tokens"]
    # Two keys verified once each, then answered from the cache.
    assert value(samples, "keylimit_argon2_verifications_total") == 2
    assert value(samples, "keylimit_key_cache_hits_total") == 5
    assert value(samples, "keylimit_storage_seconds_count", storage="limits") == 6
    assert value(samples, "keylimit_storage_errors_total", storage="limits") == 0
    assert value(samples, "keylimit_limit_storage_degraded") == 0  # memory limits: never degraded

    # One log line per refusal, with its structured fields and no key material.
    refusals = [r for r in caplog.records if getattr(r, "reason", None) is not None]
    by_reason = {r.reason: r for r in refusals}  # type: ignore[attr-defined]
    assert sorted(r.reason for r in refusals) == sorted(  # type: ignore[attr-defined]
        [
            "missing_key",
            "scope",
            "completion_tokens",
            "prompt_tokens",
            "requests",
            "invalid_key",
            "invalid_key",
            "invalid_key",
        ]
    )
    for reason in ("missing_key", "invalid_key", "scope"):
        assert by_reason[reason].name == "keylimit.auth.refusals"
    for reason in ("requests", "prompt_tokens", "completion_tokens"):
        record = by_reason[reason]
        assert record.name == "keylimit.limits"
        assert (record.account, record.key_id) == ("acme", f"key_{full.split('_')[2]}")  # type: ignore[attr-defined]
    assert by_reason["requests"].limit == 3  # type: ignore[attr-defined]
    assert by_reason["prompt_tokens"].limit == 40  # type: ignore[attr-defined]
    assert by_reason["completion_tokens"].limit == 5  # type: ignore[attr-defined]
    assert by_reason["scope"].account == "acme"  # type: ignore[attr-defined]
    assert by_reason["missing_key"].key_id is None  # type: ignore[attr-defined]
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert full not in text
        assert reader not in text


async def test_labels_name_plans_not_keys_and_accounts_only_when_enabled() -> None:
    for accounts in (False, True):
        protect = make(metrics_accounts=accounts)
        record, token = await key_manager(protect.config, protect.store).create_key("acme", "k")
        async with client(protect) as c:
            assert (await c.get("/whoami", headers=bearer(token))).status_code == 200
            response = await c.get("/metrics")
        text = response.text
        assert record.id not in text
        assert token not in text
        assert token[-38:-6] not in text
        samples = await_free_samples(text)
        admitted = [labels for name, labels in samples if name == "keylimit_requests_admitted_total"]
        expected = {("plan", "free"), ("account", "acme")} if accounts else {("plan", "free")}
        assert admitted == [frozenset(expected)]


def await_free_samples(text: str) -> list[tuple[str, frozenset[tuple[str, str]]]]:
    return [
        (s.name, frozenset(s.labels.items())) for family in text_string_to_metric_families(text) for s in family.samples
    ]


async def test_limit_storage_down_counts_storage_refusals_and_sets_the_gauge(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every call fails at once; policy closed answers 503.
    protect = make(limits_url="redis://127.0.0.1:1/0", failure_policy="closed", redis_timeout=0.5)
    _, token = await key_manager(protect.config, protect.store).create_key("acme", "k")
    caplog.set_level(logging.INFO, logger="keylimit")
    try:
        async with client(protect) as c:
            for _ in range(2):
                assert (await c.get("/whoami", headers=bearer(token))).status_code == 503
            samples = await scrape(c)
    finally:
        await protect.aclose()
    assert value(samples, "keylimit_requests_refused_total", reason="storage", plan="free") == 2
    assert value(samples, "keylimit_storage_errors_total", storage="limits") == 1  # then not asked until a probe
    assert value(samples, "keylimit_limit_storage_degraded") == 1
    [down] = [r for r in caplog.records if getattr(r, "state", None) == "down"]
    assert (down.name, down.storage) == ("keylimit.limits", "limits")  # type: ignore[attr-defined]
    refusals = [r for r in caplog.records if getattr(r, "reason", None) == "storage"]
    assert [(r.name, r.account) for r in refusals] == [("keylimit.limits", "acme")] * 2  # type: ignore[attr-defined]


async def test_metrics_off_serves_nothing_and_keeps_nothing() -> None:
    protect = make(metrics_path=None)
    assert protect.metrics is None
    assert protect.authenticator.metrics is None
    async with client(protect) as c:
        assert (await c.get("/metrics")).status_code == 401  # an ordinary protected path


def test_metrics_path_is_validated() -> None:
    from keylimit import ConfigurationError

    with pytest.raises(ConfigurationError, match="KEYLIMIT_METRICS_PATH"):
        Config(metrics_path="metrics")
    assert Config.from_env({"KEYLIMIT_METRICS_PATH": "/metrics/", "KEYLIMIT_METRICS_ACCOUNTS": "1"}).metrics_path == (
        "/metrics"
    )
