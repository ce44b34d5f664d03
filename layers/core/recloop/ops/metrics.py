"""Service metrics shared by every Lambda instance through Redis.

Latencies go into per-minute histograms with log-spaced buckets (10% wide), so percentiles over
any window are a merge of small hashes, whatever the number of instances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.latency_histogram import bucket_of, percentile_from_histogram

HISTOGRAM_TTL_SECONDS = 2 * 3600
DEFAULT_WINDOW_MINUTES = 60


def record_latency(redis_client: RedisClient, endpoint: str, latency_ms: float, now: float | None = None) -> None:
    minute = int((time.time() if now is None else now) // 60)
    key = Keys.metrics_latency(endpoint, minute)
    pipe = redis_client.pipeline(transaction=False)
    pipe.hincrby(key, str(bucket_of(latency_ms)), 1)
    pipe.expire(key, HISTOGRAM_TTL_SECONDS)
    pipe.sadd(Keys.LATENCY_ENDPOINTS, endpoint)
    pipe.execute()


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def latency_summary(
    redis_client: RedisClient, window_minutes: int = DEFAULT_WINDOW_MINUTES, now: float | None = None
) -> dict[str, LatencySummary]:
    last = int((time.time() if now is None else now) // 60)
    endpoints = sorted(redis_client.smembers(Keys.LATENCY_ENDPOINTS))
    pipe = redis_client.pipeline(transaction=False)
    for endpoint in endpoints:
        for minute in range(last - window_minutes + 1, last + 1):
            pipe.hgetall(Keys.metrics_latency(endpoint, minute))
    replies = iter(pipe.execute())
    summaries: dict[str, LatencySummary] = {}
    for endpoint in endpoints:
        histogram: dict[int, int] = {}
        for _ in range(window_minutes):
            for bucket, count in next(replies).items():
                histogram[int(bucket)] = histogram.get(int(bucket), 0) + int(count)
        summaries[endpoint] = LatencySummary(
            count=sum(histogram.values()),
            p50_ms=percentile_from_histogram(histogram, 0.50),
            p95_ms=percentile_from_histogram(histogram, 0.95),
            p99_ms=percentile_from_histogram(histogram, 0.99),
        )
    return summaries


def counters(redis_client: RedisClient) -> dict[str, int]:
    return {name: int(value) for name, value in redis_client.hgetall(Keys.COUNTERS).items()}
