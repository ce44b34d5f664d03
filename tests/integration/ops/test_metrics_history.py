"""The metrics window minute by minute, from the same per-minute Redis hashes as the hour's summary."""

from __future__ import annotations

import redis

from recloop.core.events import EventType
from recloop.ops.metrics import latency_summary, minute_history, record_latency

NOW = 1_795_780_800.0  # a minute's start
ENDPOINT = "POST /api/v1/recommend"


def test_each_minute_has_its_own_percentiles_and_the_hour_is_their_merge(redis_client: redis.Redis) -> None:
    for latency in (10.0, 10.0, 10.0):
        record_latency(redis_client, ENDPOINT, latency, now=NOW - 120)  # two minutes ago
    record_latency(redis_client, ENDPOINT, 100.0, now=NOW + 30)  # this minute

    history = minute_history(redis_client, window_minutes=5, now=NOW + 30)

    assert history.minutes == [NOW - 240, NOW - 180, NOW - 120, NOW - 60, NOW]
    minutes = history.latency[ENDPOINT]
    assert [m.count if m else 0 for m in minutes] == [0, 0, 3, 0, 1]
    assert minutes[0] is None and minutes[3] is None  # no request: a gap, not a zero latency
    assert 10.0 <= minutes[2].p99_ms <= 11.0 and 100.0 <= minutes[4].p50_ms <= 110.0
    hour = latency_summary(redis_client, window_minutes=5, now=NOW + 30)[ENDPOINT]
    assert hour.count == 4 and hour.p99_ms == minutes[4].p99_ms and hour.p50_ms == minutes[2].p50_ms
    assert set(history.events) == {kind.value for kind in EventType}
    assert all(counts == [0] * 5 for counts in history.events.values())
