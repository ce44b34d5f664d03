"""Which Redis the tests run against: one server (the default) or a cluster (RECLOOP_TEST_REDIS=cluster), and a
test's own client of it."""

from __future__ import annotations

import os
from typing import Any

import redis
from redis.cluster import RedisCluster

MODES = ("single", "cluster")
MODE = os.environ.get("RECLOOP_TEST_REDIS") or "single"
if MODE not in MODES:  # a misspelt mode must not quietly run the single-server suite again
    raise RuntimeError(f"RECLOOP_TEST_REDIS={MODE!r}: use one of {', '.join(MODES)}")
CLUSTER = MODE == "cluster"


def redis_connection(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A client of the test Redis at `url` (decoded replies): a cluster client in a cluster run."""
    if CLUSTER:
        return RedisCluster.from_url(url, decode_responses=True, **options)
    return redis.Redis.from_url(url, decode_responses=True, **options)
