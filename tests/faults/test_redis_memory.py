"""Redis memory stays bounded while online updates keep failing: the buffer keeps its newest events up to its limit
(the archive keeps every one), and every per-event key expires with the de-duplication window."""

from __future__ import annotations

from typing import Any

import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.ingest.consumer import StreamConsumer
from recloop.learning.online.buffer import OnlineBuffer
from tests.support.archive import archived_event_ids
from tests.support.environment import TEST_BUCKET
from tests.support.learning import event
from tests.support.stream import records

SETTINGS = Settings.from_env(
    {"ONLINE_LEARNING_BUFFER_SIZE": "40", "ONLINE_LEARNING_BUFFER_LIMIT": "50", "DEDUPLICATION_WINDOW_HOURS": "72"}
)


def test_the_buffer_keeps_its_newest_events_up_to_its_limit_and_counts_what_it_dropped(
    aws: dict[str, Any], redis_client: redis.Redis
) -> None:
    consumer = StreamConsumer(
        FeatureStore(redis_client, SETTINGS), ObjectStore(aws["s3"], TEST_BUCKET), OnlineBuffer(redis_client, SETTINGS)
    )
    events = [event(f"u{n % 7}", f"i{n % 11}", 1_800_000_000.0 + n, "click") for n in range(80)]
    for record in records(events):
        consumer.process(record)  # no update runs: as when every update fails

    buffer = consumer.buffer
    assert buffer.size() == 50 and buffer.dropped() == 30
    assert [e.event.event_id for e in buffer.oldest(50)] == [e.event_id for e in events[30:]]
    assert [e.sequence for e in buffer.oldest(50)] == list(range(31, 81))
    assert len(archived_event_ids(aws["s3"])) == 80  # online learning lost the oldest; retraining has them all
    assert int(redis_client.hget(Keys.COUNTERS, "events:click")) == 80


def test_every_per_event_key_expires_with_the_deduplication_window(aws: dict[str, Any], redis_client) -> None:
    consumer = StreamConsumer(
        FeatureStore(redis_client, SETTINGS), ObjectStore(aws["s3"], TEST_BUCKET), OnlineBuffer(redis_client, SETTINGS)
    )
    for record in records([event(f"u{n}", "i", 1_800_000_000.0 + n, "view") for n in range(20)]):
        consumer.process(record)
    per_event = [
        key
        for key in redis_client.scan_iter(count=1000)
        if ":ev:" in key  # the feature claim {u:..}:ev:<id> and the buffer claim {olb}:ev:<id>
    ]
    assert len(per_event) == 40
    window = 72 * 3600
    assert all(window - 60 < redis_client.ttl(key) <= window for key in per_event)
