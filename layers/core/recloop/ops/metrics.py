"""Service metrics shared by every Lambda instance through Redis.

Latencies go into per-minute histograms with log-spaced buckets (10% wide), so percentiles over
any window are a merge of small hashes, whatever the number of instances. The same minutes, read one by one, are
the latency over time; the feature store counts the events it applies per minute (Keys.metrics_events) beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.events import EventType
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
    return {
        endpoint: _summary(_merged(histograms))
        for endpoint, histograms in _minute_histograms(redis_client, window_minutes, now).items()
    }


@dataclass(frozen=True)
class MinuteHistory:
    """The window minute by minute, oldest first: latency percentiles per endpoint (None in a minute without
    requests) and events applied per type."""

    minutes: list[int]  # each minute's start, epoch seconds
    latency: dict[str, list[LatencySummary | None]]
    events: dict[str, list[int]]


def minute_history(
    redis_client: RedisClient, window_minutes: int = DEFAULT_WINDOW_MINUTES, now: float | None = None
) -> MinuteHistory:
    minutes = _window(window_minutes, now)
    latency = {
        endpoint: [_summary(h) if h else None for h in histograms]
        for endpoint, histograms in _minute_histograms(redis_client, window_minutes, now).items()
    }
    pipe = redis_client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(Keys.metrics_events(minute))
    counts = pipe.execute()
    events = {kind.value: [int(count.get(kind.value, 0)) for count in counts] for kind in EventType}
    return MinuteHistory(minutes=[minute * 60 for minute in minutes], latency=latency, events=events)


def _window(window_minutes: int, now: float | None) -> range:
    last = int((time.time() if now is None else now) // 60)
    return range(last - window_minutes + 1, last + 1)


def _minute_histograms(
    redis_client: RedisClient, window_minutes: int, now: float | None
) -> dict[str, list[dict[int, int]]]:
    """Each endpoint's latency histogram of every minute of the window (oldest first), in one pipeline."""
    minutes = _window(window_minutes, now)
    endpoints = sorted(redis_client.smembers(Keys.LATENCY_ENDPOINTS))
    pipe = redis_client.pipeline(transaction=False)
    for endpoint in endpoints:
        for minute in minutes:
            pipe.hgetall(Keys.metrics_latency(endpoint, minute))
    replies = iter(pipe.execute())
    return {
        endpoint: [{int(bucket): int(count) for bucket, count in next(replies).items()} for _ in minutes]
        for endpoint in endpoints
    }


def _merged(histograms: list[dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            merged[bucket] = merged.get(bucket, 0) + count
    return merged


def _summary(histogram: dict[int, int]) -> LatencySummary:
    return LatencySummary(
        count=sum(histogram.values()),
        p50_ms=percentile_from_histogram(histogram, 0.50),
        p95_ms=percentile_from_histogram(histogram, 0.95),
        p99_ms=percentile_from_histogram(histogram, 0.99),
    )


def counters(redis_client: RedisClient) -> dict[str, int]:
    return {name: int(value) for name, value in redis_client.hgetall(Keys.COUNTERS).items()}
