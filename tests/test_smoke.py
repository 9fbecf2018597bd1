from __future__ import annotations

import redis

from tests._redis import RedisCluster


def test_cluster_fixture_has_three_masters(redis_cluster: RedisCluster, cluster_url: str) -> None:
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    masters = [n for n in client.get_nodes() if n.server_type == "primary"]
    assert len(masters) == 3
    client.set("{a}x", 1)
    assert client.get("{a}x") == b"1"
