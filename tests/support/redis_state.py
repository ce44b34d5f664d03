"""A Redis database as data, to compare before and after: a redelivery or a second replay must change nothing."""

from __future__ import annotations

from typing import Any

import redis


def redis_state(client: redis.Redis) -> dict[str, Any]:
    """Every key with its value (TTLs aside); SCAN covers every primary of a cluster, KEYS only one node."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": lambda k: sorted(client.smembers(k)),
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
    }
    return {key: readers[client.type(key)](key) for key in sorted(client.scan_iter(count=1000))}
