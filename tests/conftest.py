from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._redis import RedisCluster, RedisServer
from tests.secrets._watch import SecretWatch, watching


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests that stop Redis start their own."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean (flushed) standalone Redis."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """A clean (flushed) 3-master Redis Cluster."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(autouse=True)
def no_key_material_in_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretWatch]:
    """Every test: no log record (message, exception, stack) holds a key or admin token made during it."""
    with watching(monkeypatch) as watch:
        yield watch
    leaks = watch.leaks()
    if leaks:
        pytest.fail("key material in the logs:\n" + "\n".join(leaks), pytrace=False)
