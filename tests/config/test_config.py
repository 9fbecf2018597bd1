from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from keylimit import Argon2Params, Config, ConfigurationError, Limits
from keylimit.ratelimit._plans import DEFAULT_PLANS


def test_defaults_match_the_design() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert config.keys_url == "sqlite:///keylimit.db"
    assert config.limits_url == "memory://"
    assert config.admin_token is None
    assert config.key_prefix == "forii"
    assert dict(config.plans) == dict(DEFAULT_PLANS)
    assert config.default_plan == "free"
    assert config.window_seconds == 60.0
    assert config.failure_policy == "fallback"
    assert config.max_body_bytes == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        # storage
        ("KEYLIMIT_KEYS_URL", "memory://", "keys_url", "memory://"),
        ("KEYLIMIT_KEYS_URL", "sqlite:///var/lib/keys.db", "keys_url", "sqlite:///var/lib/keys.db"),
        ("KEYLIMIT_KEYS_URL", "redis://localhost:6379/0", "keys_url", "redis://localhost:6379/0"),
        ("KEYLIMIT_KEYS_URL", "rediss://h:6380", "keys_url", "rediss://h:6380"),
        ("KEYLIMIT_KEYS_URL", "redis+cluster://h:7000", "keys_url", "redis+cluster://h:7000"),
        ("KEYLIMIT_LIMITS_URL", "redis://localhost:6379", "limits_url", "redis://localhost:6379"),
        ("KEYLIMIT_LIMITS_URL", "redis+cluster://h:7000", "limits_url", "redis+cluster://h:7000"),
        ("KEYLIMIT_LIMITS_URL", "redis+sentinel://h:26379/m", "limits_url", "redis+sentinel://h:26379/m"),
        ("KEYLIMIT_LIMITS_URL", "memcached://h:11211", "limits_url", "memcached://h:11211"),
        ("KEYLIMIT_REDIS_TIMEOUT", "0.5", "redis_timeout", 0.5),
        # keys
        ("KEYLIMIT_ADMIN_TOKEN", "s3cret-admin", "admin_token", "s3cret-admin"),
        ("KEYLIMIT_ADMIN_TOKEN", "", "admin_token", None),
        ("KEYLIMIT_KEY_PREFIX", "acme", "key_prefix", "acme"),
        ("KEYLIMIT_CACHE_TTL", "2.5", "cache_ttl", 2.5),
        ("KEYLIMIT_CACHE_SIZE", "500", "cache_size", 500),
        ("KEYLIMIT_VERIFY_CONCURRENCY", "3", "verify_concurrency", 3),
        ("KEYLIMIT_AUTH_FAILURES_PER_MINUTE", "5", "auth_failures_per_minute", 5),
        ("KEYLIMIT_LAST_USED_INTERVAL", "30", "last_used_interval", 30.0),
        # limits
        ("KEYLIMIT_DEFAULT_PLAN", "starter", "default_plan", "starter"),
        ("KEYLIMIT_WINDOW_SECONDS", "1", "window_seconds", 1.0),
        ("KEYLIMIT_FAILURE_POLICY", "closed", "failure_policy", "closed"),
        ("KEYLIMIT_FAILURE_POLICY", "OPEN", "failure_policy", "open"),
        ("KEYLIMIT_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
        ("KEYLIMIT_TOKEN_COUNTER", "mypkg.tokens:count", "token_counter", "mypkg.tokens:count"),
        ("KEYLIMIT_TOKEN_COUNTER", "", "token_counter", None),
        # booleans
        ("KEYLIMIT_IETF_HEADERS", "1", "ietf_headers", True),
        ("KEYLIMIT_IETF_HEADERS", "yes", "ietf_headers", True),
        ("KEYLIMIT_IETF_HEADERS", "On", "ietf_headers", True),
        ("KEYLIMIT_RESERVE_MAX_TOKENS", "true", "reserve_max_tokens", True),
        ("KEYLIMIT_MANAGEMENT", "0", "management", False),
        ("KEYLIMIT_MANAGEMENT", "no", "management", False),
        ("KEYLIMIT_MANAGEMENT", "off", "management", False),
        ("KEYLIMIT_MANAGEMENT", "FALSE", "management", False),
        # paths
        ("KEYLIMIT_OPEN_PATHS", "/healthz, /metrics", "open_paths", ("/healthz", "/metrics")),
        ("KEYLIMIT_OPEN_PATHS", "", "open_paths", ()),
        ("KEYLIMIT_MANAGEMENT_PATH", "/admin/accounts/", "management_path", "/admin/accounts"),
    ],
)
def test_each_variable_sets_its_field(variable: str, value: str, field: str, expected: object) -> None:
    assert getattr(Config.from_env({variable: value}), field) == expected


def test_empty_variable_means_the_default() -> None:
    assert Config.from_env({"KEYLIMIT_WINDOW_SECONDS": "", "KEYLIMIT_KEYS_URL": ""}) == Config()


def test_argon2_variables() -> None:
    config = Config.from_env(
        {"KEYLIMIT_ARGON2_TIME_COST": "1", "KEYLIMIT_ARGON2_MEMORY_COST": "8", "KEYLIMIT_ARGON2_PARALLELISM": "1"}
    )
    assert config.argon2 == Argon2Params(time_cost=1, memory_cost=8, parallelism=1)
    # One variable alone keeps the others at the production defaults.
    assert Config.from_env({"KEYLIMIT_ARGON2_TIME_COST": "5"}).argon2 == Argon2Params(time_cost=5)


def test_plans_from_json_merge_over_the_defaults() -> None:
    config = Config.from_env(
        {
            "KEYLIMIT_PLANS": '{"free": [10, 1000, 100], "gold": {"requests": 1, "prompt_tokens": 2,'
            ' "completion_tokens": 3}, "vip": null, "team": "custom"}'
        }
    )
    assert config.plans["free"] == Limits(10, 1000, 100)
    assert config.plans["gold"] == Limits(1, 2, 3)
    assert config.plans["vip"] is None
    assert config.plans["team"] is None
    assert config.plans["pro"] == DEFAULT_PLANS["pro"]


def test_plan_variables_override_json() -> None:
    config = Config.from_env(
        {
            "KEYLIMIT_PLANS": '{"gold": [1, 2, 3]}',
            "KEYLIMIT_PLAN_GOLD": "7, 8, 9",
            "KEYLIMIT_PLAN_BIG_TEAM": "custom",
            "KEYLIMIT_DEFAULT_PLAN": "gold",
        }
    )
    assert config.plans["gold"] == Limits(7, 8, 9)
    assert config.plans["big_team"] is None
    assert config.default_plan == "gold"


def test_plans_cannot_be_changed_after_creation() -> None:
    config = Config(plans={"free": Limits(1, 2, 3)})
    assert isinstance(config.plans, MappingProxyType)
    with pytest.raises(TypeError):
        config.plans["free"] = None  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.window_seconds = 1.0  # type: ignore[misc]


TOML = """
keys_url = "memory://"
admin_token = "from-file"
window_seconds = 30
ietf_headers = true
open_paths = ["/up"]
default_plan = "gold"

[plans.gold]
requests = 5
prompt_tokens = 500
completion_tokens = 50

[plans]
free = [1, 2, 3]
vip = "custom"

[argon2]
time_cost = 1
memory_cost = 8
parallelism = 1
"""


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "keylimit.toml"
    path.write_text(TOML)
    config = Config.from_toml(path)
    assert config.keys_url == "memory://"
    assert config.admin_token == "from-file"
    assert config.window_seconds == 30.0
    assert config.ietf_headers is True
    assert config.open_paths == ("/up",)
    assert config.default_plan == "gold"
    assert config.plans["gold"] == Limits(5, 500, 50)
    assert config.plans["free"] == Limits(1, 2, 3)
    assert config.plans["vip"] is None
    assert config.plans["starter"] == DEFAULT_PLANS["starter"]
    assert config.argon2 == Argon2Params(time_cost=1, memory_cost=8, parallelism=1)
    assert Config.from_env({"KEYLIMIT_CONFIG": str(path)}) == config


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keylimit.toml"
    path.write_text(TOML)
    config = Config.from_env(
        {
            "KEYLIMIT_CONFIG": str(path),
            "KEYLIMIT_WINDOW_SECONDS": "10",
            "KEYLIMIT_PLAN_GOLD": "9,9,9",
            "KEYLIMIT_ARGON2_TIME_COST": "2",
        }
    )
    assert config.window_seconds == 10.0
    assert config.admin_token == "from-file"
    assert config.plans["gold"] == Limits(9, 9, 9)
    assert config.plans["free"] == Limits(1, 2, 3)
    assert config.argon2 == Argon2Params(time_cost=2, memory_cost=8, parallelism=1)


def test_repr_hides_secrets() -> None:
    config = Config(
        admin_token="hunter2-admin-token",
        keys_url="redis://user:keypass@db:6379/0",
        limits_url="redis://:limitpass@db:6379/1",
    )
    text = repr(config)
    assert text.startswith("Config(keys_url='redis://user:***@db:6379/0'")
    assert "admin_token='***'" in text
    assert "window_seconds=60.0" in text
    for secret in ("hunter2", "keypass", "limitpass"):
        assert secret not in text
    assert "admin_token=None" in repr(Config())


def err(**kwargs: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        Config(**kwargs)
    return str(info.value)


def env_err(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as info:
        Config.from_env(environ)
    return str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # URLs
        ("KEYLIMIT_KEYS_URL", "postgres://db/keys", "KEYLIMIT_KEYS_URL: unknown store 'postgres://db/keys'"),
        ("KEYLIMIT_KEYS_URL", "keys.db", "KEYLIMIT_KEYS_URL: unknown store 'keys.db'"),
        ("KEYLIMIT_KEYS_URL", "sqlite://", "KEYLIMIT_KEYS_URL: a SQLite URL has three slashes before a relative"),
        ("KEYLIMIT_KEYS_URL", "sqlite://keys.db", "KEYLIMIT_KEYS_URL: a SQLite URL has three slashes before"),
        ("KEYLIMIT_LIMITS_URL", "postgres://db", "KEYLIMIT_LIMITS_URL: unknown storage 'postgres://db'"),
        ("KEYLIMIT_LIMITS_URL", "nowhere", "KEYLIMIT_LIMITS_URL: unknown storage 'nowhere'"),
        # numbers
        ("KEYLIMIT_WINDOW_SECONDS", "-1", "KEYLIMIT_WINDOW_SECONDS: must be a positive number, not '-1'"),
        ("KEYLIMIT_WINDOW_SECONDS", "0", "KEYLIMIT_WINDOW_SECONDS: must be a positive number, not '0'"),
        ("KEYLIMIT_WINDOW_SECONDS", "nan", "KEYLIMIT_WINDOW_SECONDS: must be a positive number, not 'nan'"),
        ("KEYLIMIT_WINDOW_SECONDS", "a minute", "KEYLIMIT_WINDOW_SECONDS: must be a positive number"),
        ("KEYLIMIT_CACHE_TTL", "-5", "KEYLIMIT_CACHE_TTL: must be a positive number, not '-5'"),
        ("KEYLIMIT_LAST_USED_INTERVAL", "0", "KEYLIMIT_LAST_USED_INTERVAL: must be a positive number"),
        ("KEYLIMIT_REDIS_TIMEOUT", "inf", "KEYLIMIT_REDIS_TIMEOUT: must be a positive number"),
        ("KEYLIMIT_MAX_BODY_BYTES", "0", "KEYLIMIT_MAX_BODY_BYTES: must be a positive whole number, not '0'"),
        ("KEYLIMIT_MAX_BODY_BYTES", "1.5", "KEYLIMIT_MAX_BODY_BYTES: must be a positive whole number, not '1.5'"),
        ("KEYLIMIT_CACHE_SIZE", "-1", "KEYLIMIT_CACHE_SIZE: must be a positive whole number"),
        ("KEYLIMIT_VERIFY_CONCURRENCY", "0", "KEYLIMIT_VERIFY_CONCURRENCY: must be a positive whole number"),
        ("KEYLIMIT_AUTH_FAILURES_PER_MINUTE", "x", "KEYLIMIT_AUTH_FAILURES_PER_MINUTE: must be a positive whole"),
        ("KEYLIMIT_ARGON2_TIME_COST", "0", "KEYLIMIT_ARGON2_TIME_COST: must be a positive whole number, not '0'"),
        ("KEYLIMIT_ARGON2_PARALLELISM", "-2", "KEYLIMIT_ARGON2_PARALLELISM: must be a positive whole number"),
        ("KEYLIMIT_ARGON2_MEMORY_COST", "4", "KEYLIMIT_ARGON2_MEMORY_COST: must be at least 8 KiB per lane"),
        # booleans: only 1/0/true/false/yes/no/on/off
        ("KEYLIMIT_IETF_HEADERS", "maybe", "KEYLIMIT_IETF_HEADERS: must be one of 1/0, true/false, yes/no, on/off"),
        ("KEYLIMIT_RESERVE_MAX_TOKENS", "2", "KEYLIMIT_RESERVE_MAX_TOKENS: must be one of 1/0"),
        ("KEYLIMIT_MANAGEMENT", "y", "KEYLIMIT_MANAGEMENT: must be one of 1/0"),
        # choices and formats
        ("KEYLIMIT_FAILURE_POLICY", "retry", "KEYLIMIT_FAILURE_POLICY: must be one of fallback, open, closed"),
        ("KEYLIMIT_KEY_PREFIX", "my_co", "KEYLIMIT_KEY_PREFIX: must be 1 to 32 ASCII letters or digits, not 'my_co'"),
        ("KEYLIMIT_KEY_PREFIX", "x" * 33, "KEYLIMIT_KEY_PREFIX: must be 1 to 32 ASCII letters or digits"),
        ("KEYLIMIT_TOKEN_COUNTER", "not a path", "KEYLIMIT_TOKEN_COUNTER: must be 'module:callable'"),
        ("KEYLIMIT_TOKEN_COUNTER", "mypkg.count", "KEYLIMIT_TOKEN_COUNTER: must be 'module:callable'"),
        ("KEYLIMIT_OPEN_PATHS", "/ok,health", "KEYLIMIT_OPEN_PATHS: must be a URL path starting with '/'"),
        ("KEYLIMIT_MANAGEMENT_PATH", "accounts", "KEYLIMIT_MANAGEMENT_PATH: must be a URL path starting with '/'"),
        ("KEYLIMIT_MANAGEMENT_PATH", "/", "KEYLIMIT_MANAGEMENT_PATH: must be a URL path below the root"),
        # plans
        ("KEYLIMIT_DEFAULT_PLAN", "gold", "KEYLIMIT_DEFAULT_PLAN: unknown plan 'gold' (plans: free, starter, pro"),
        ("KEYLIMIT_DEFAULT_PLAN", "enterprise", "KEYLIMIT_DEFAULT_PLAN: plan 'enterprise' has no limits of its own"),
        ("KEYLIMIT_PLANS", "{nope", "KEYLIMIT_PLANS: not valid JSON"),
        ("KEYLIMIT_PLANS", "[1, 2, 3]", "KEYLIMIT_PLANS: must map plan names to limits"),
        ("KEYLIMIT_PLANS", '{"free": [1, -2, 3]}', "KEYLIMIT_PLANS: plan 'free' limits must be whole numbers, zero or"),
        ("KEYLIMIT_PLANS", '{"free": [1, 2]}', "KEYLIMIT_PLANS: plan 'free' must be requests,prompt_tokens,comp"),
        ("KEYLIMIT_PLANS", '{"free": {"rpm": 1}}', "KEYLIMIT_PLANS: plan 'free' must be requests,prompt_tokens,comp"),
        ("KEYLIMIT_PLANS", '{"free": [1.5, 2, 3]}', "KEYLIMIT_PLANS: plan 'free' limits must be whole numbers"),
        ("KEYLIMIT_PLANS", '{"free": [true, 2, 3]}', "KEYLIMIT_PLANS: plan 'free' limits must be whole numbers"),
        ("KEYLIMIT_PLANS", '{"bad name": [1, 2, 3]}', "KEYLIMIT_PLANS: plan name must be 1 to 64"),
        ("KEYLIMIT_PLAN_GOLD", "1,2,-3", "KEYLIMIT_PLAN_GOLD: plan 'gold' limits must be whole numbers, zero or more"),
        ("KEYLIMIT_PLAN_GOLD", "lots", "KEYLIMIT_PLAN_GOLD: plan 'gold' must be requests,prompt_tokens"),
    ],
)
def test_bad_variable_names_itself(variable: str, value: str, message: str) -> None:
    assert env_err({variable: value}).startswith(message)


def test_bad_admin_token_is_not_echoed() -> None:
    message = env_err({"KEYLIMIT_ADMIN_TOKEN": "has a space-secret"})
    assert message.startswith("KEYLIMIT_ADMIN_TOKEN: must be a string without spaces")
    assert "secret" not in message


def test_bad_url_message_hides_the_password() -> None:
    message = env_err({"KEYLIMIT_KEYS_URL": "mysql://root:topsecret@db/keys"})
    assert message.startswith("KEYLIMIT_KEYS_URL: unknown store")
    assert "topsecret" not in message


def test_direct_construction_is_validated() -> None:
    assert err(window_seconds=-1) == "KEYLIMIT_WINDOW_SECONDS: must be a positive number, not -1"
    assert err(ietf_headers=1).startswith("KEYLIMIT_IETF_HEADERS: must be one of")
    assert err(max_body_bytes=True).startswith("KEYLIMIT_MAX_BODY_BYTES: must be a positive whole number")
    assert err(plans={"pro": Limits(1, 2, 3)}).startswith("KEYLIMIT_DEFAULT_PLAN: unknown plan 'free'")
    assert err(plans={}).startswith("KEYLIMIT_PLANS: needs at least one plan")
    assert err(argon2={"time_cost": 0}).startswith("KEYLIMIT_ARGON2_TIME_COST:")
    assert err(failure_policy="sometimes").startswith("KEYLIMIT_FAILURE_POLICY:")
    assert err(clock=42).startswith("clock: must be a callable")


def test_direct_construction_accepts_plain_values() -> None:
    plain: dict[str, Any] = {"plans": {"free": (1, 2, 3), "biz": "custom"}, "argon2": {"time_cost": 1}}
    config = Config(**plain, open_paths=["/a"])  # type: ignore[arg-type]
    assert config.plans == {"free": Limits(1, 2, 3), "biz": None}
    assert config.argon2 == Argon2Params(time_cost=1)
    assert config.open_paths == ("/a",)


def test_replace_is_validated_too() -> None:
    with pytest.raises(ConfigurationError, match=r"^KEYLIMIT_CACHE_TTL: "):
        dataclasses.replace(Config(), cache_ttl=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("window_seconds = ", "is not valid TOML"),
        ("window_second = 5", "has unknown settings 'window_second'"),
        ("clock = 5", "has unknown settings 'clock'"),
        (b"\xff\xfe = 1", "is not valid TOML"),
    ],
)
def test_invalid_toml_names_the_variable_and_the_path(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    text = env_err({"KEYLIMIT_CONFIG": str(path)})
    assert text.startswith(f"KEYLIMIT_CONFIG: {str(path)!r}")
    assert message in text


def test_unreadable_toml_names_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    text = env_err({"KEYLIMIT_CONFIG": str(missing)})
    assert text.startswith(f"KEYLIMIT_CONFIG: cannot read {str(missing)!r}")
    with pytest.raises(ConfigurationError, match=r"^KEYLIMIT_CONFIG: cannot read"):
        Config.from_toml(tmp_path)  # a directory


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("window_seconds = -1", "KEYLIMIT_WINDOW_SECONDS: must be a positive number, not -1"),
        ("ietf_headers = 'sure'", "KEYLIMIT_IETF_HEADERS: must be one of"),
        ("[plans.free]\nrequests = -1\nprompt_tokens = 1\ncompletion_tokens = 1", "KEYLIMIT_PLANS: plan 'free'"),
        ("[plans.free]\nrequests = 1", "KEYLIMIT_PLANS: plan 'free' must be"),
        ("[argon2]\ntime_cost = 0", "KEYLIMIT_ARGON2_TIME_COST: must be a positive whole number"),
        ("[argon2]\nsalt = 1", "KEYLIMIT_ARGON2_*: [argon2] takes time_cost, memory_cost, parallelism"),
        ("plans = 3", "KEYLIMIT_PLANS: must map plan names to limits"),
    ],
)
def test_bad_values_in_toml(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        Config.from_toml(path)
    assert str(info.value).startswith(message)
