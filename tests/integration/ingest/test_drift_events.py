"""The stream consumer's batches feed the drift window's events stream: each new event once, with its item's
categories; a redelivery adds nothing, and a failing drift window never fails the batch."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recloop.adapters.objects import ObjectStore
from recloop.adapters.queues import Queue
from recloop.core.settings import Settings
from recloop.drift.features import Source
from recloop.drift.window import DriftWindow
from recloop.features.store import FeatureStore, ItemMetadata
from recloop.ingest.batch import process_records
from recloop.ingest.consumer import DeadLetters, StreamConsumer
from recloop.learning.online.buffer import OnlineBuffer
from tests.support.environment import REGION, TEST_BUCKET
from tests.support.learning import T0, event
from tests.support.stream import records

SETTINGS = Settings.from_env({})


def consumer_with(window: DriftWindow, aws: dict[str, Any], redis_client: redis.Redis) -> StreamConsumer:
    store = FeatureStore(redis_client, SETTINGS)
    store.upsert_items([ItemMetadata("i1", ("Drama",)), ItemMetadata("i2", ("Comedy", "Drama"))], now=T0)
    objects = ObjectStore(aws["s3"], TEST_BUCKET)
    return StreamConsumer(store, objects, OnlineBuffer(redis_client, SETTINGS), drift_window=window)


@pytest.fixture
def dead_letters(aws: dict[str, Any]) -> DeadLetters:
    url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-dlq")["QueueUrl"]
    return DeadLetters(Queue(boto3.client("sqs", region_name=REGION), url))


def test_new_events_are_observed_once_with_their_items_categories(
    aws: dict[str, Any], redis_client: redis.Redis, dead_letters: DeadLetters
) -> None:
    window = DriftWindow(redis_client, rng=random.Random(3))
    consumer = consumer_with(window, aws, redis_client)
    batch = records([event("u1", "i1", T0, "like"), event("u2", "i2", T0 + 1, "view"), event("u3", "i9", T0 + 2)])

    assert process_records(batch, consumer, dead_letters).failed == {}
    assert process_records(batch, consumer, dead_letters).failed == {}  # a redelivery: nothing new

    sample = window.sample("any-version")
    assert sample.observed[Source.EVENTS] == 3
    assert sample.sample.categorical["event_type"] == {"like": 2, "view": 1}
    assert sample.sample.categorical["item_category"] == {"Drama": 1, "Comedy|Drama": 1, "none": 1}


def test_a_drift_window_that_fails_never_fails_the_batch(
    aws: dict[str, Any], redis_client: redis.Redis, dead_letters: DeadLetters
) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    consumer = consumer_with(DriftWindow(unreachable), aws, redis_client)
    batch = records([event("u1", "i1", T0), event("u2", "i2", T0 + 1)])

    outcome = process_records(batch, consumer, dead_letters)

    assert outcome.failed == {} and len(outcome.processed) == 2
    assert consumer.buffer_size() == 2
