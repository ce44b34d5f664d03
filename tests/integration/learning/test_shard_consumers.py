"""Many shard consumers at once: with several shards and a ParallelizationFactor above 1, Lambda runs one invocation
of OnlineUpdateFunction per shard and batch at the same time, each in its own instance. They all fill the one
online-learning buffer; the updates they start must still run one at a time under the lock, and every event must
be counted, buffered and learned once.

Each thread here is one such instance: its own container (clients, learner, cached champion), the function's entry
point, its own shard's batches in order, against the same real Redis (and S3 in moto).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import redis

from local.inprocess import LambdaContext, load_function
from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.container import Container, reset_container
from recloop.core.events import Interaction
from recloop.core.settings import get_settings
from recloop.handlers import stream as stream_handler
from recloop.learning.online import learner as learner_module
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.errors import UpdateRunningError
from recloop.learning.online.learner import OnlineLearner
from recloop.learning.online.results import UpdateOutcome
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import REGION, TEST_BUCKET
from tests.support.learning import T0, champion, event
from tests.support.stream import kinesis_batch
from tests.support.stream import records as stream_records

SHARDS = 4
PARALLELIZATION_FACTOR = 2
CONSUMERS = SHARDS * PARALLELIZATION_FACTOR
USERS_PER_CONSUMER = 5
BATCHES_PER_CONSUMER = 3
BUFFER_SIZE = 40


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)


@pytest.fixture
def handler(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict], dict]:
    """OnlineUpdateFunction's entry point; each thread that calls it gets a container of its own, as each concurrent
    invocation runs in an instance of its own."""
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-shards-dlq")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)
    monkeypatch.setenv("ONLINE_LEARNING_BUFFER_SIZE", str(BUFFER_SIZE))
    monkeypatch.setenv("ONLINE_LEARNING_BATCH_SIZE", "8")
    reset_container()
    instances = threading.local()

    def instance_container() -> Container:
        if not hasattr(instances, "container"):
            instances.container = Container(get_settings())
        return instances.container

    monkeypatch.setattr(stream_handler, "get_container", instance_container)
    module = load_function("online_update")
    return lambda batch: module.lambda_handler(batch, LambdaContext())


class Updates:
    """What each update did, as it ran: when it held the lock, which events it learned, and how often a consumer
    found the lock taken. The first update keeps the lock until another consumer has been turned away, so the
    test always has consumers competing for it."""

    HOLD_SECONDS = 10.0

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.spans: list[tuple[float, float]] = []
        self.learned: list[list[str]] = []  # per update, in the order the updates ran
        self.entered = 0
        self.refused = 0
        self.someone_refused = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original_update, original_inner, original_apply = (
            OnlineLearner.update,
            OnlineLearner._update,
            learner_module.apply_update,
        )
        updates = self

        def update(learner: OnlineLearner) -> Any:
            try:
                return original_update(learner)
            except UpdateRunningError:
                with updates.guard:
                    updates.refused += 1
                updates.someone_refused.set()
                raise

        def inner(learner: OnlineLearner) -> Any:  # runs inside the lock
            started = time.monotonic()
            with updates.guard:
                first = updates.entered == 0
                updates.entered += 1
            if first:
                updates.someone_refused.wait(updates.HOLD_SECONDS)
            try:
                return original_inner(learner)
            finally:
                with updates.guard:
                    updates.spans.append((started, time.monotonic()))

        def apply(kind: Any, model: Any, events: list[Interaction], *args: Any) -> Any:
            with updates.guard:
                updates.learned.append([e.event_id for e in events])
            return original_apply(kind, model, events, *args)

        monkeypatch.setattr(OnlineLearner, "update", update)
        monkeypatch.setattr(OnlineLearner, "_update", inner)
        monkeypatch.setattr(learner_module, "apply_update", apply)


def shard_traffic(consumer: int) -> list[list[Interaction]]:
    """One consumer's batches, in stream order: its own users (no other consumer has them, as a partition key goes
    to one batch at a time) like, buy, view and click items of their group in turn, 'a' users a-items and 'b' users
    b-items, which the champion knows."""
    users = [f"user{consumer * USERS_PER_CONSUMER + n}" for n in range(USERS_PER_CONSUMER)]
    events = []
    for step in range(BATCHES_PER_CONSUMER * 4):
        for n, user in enumerate(users):
            group = "a" if (consumer * USERS_PER_CONSUMER + n) % 2 == 0 else "b"
            kind = ("like", "purchase", "view", "click")[step % 4]
            events.append(event(user, f"{group}{step % 6}", T0 + 100_000 + step * 100 + n, kind))
    size = len(events) // BATCHES_PER_CONSUMER
    return [events[start : start + size] for start in range(0, len(events), size)]


def test_concurrent_shard_consumers_run_one_update_at_a_time_and_count_each_event_once(
    handler, registry, redis_client, monkeypatch
) -> None:
    champion(registry)
    updates = Updates()
    updates.install(monkeypatch)
    traffic = {consumer: shard_traffic(consumer) for consumer in range(CONSUMERS)}
    sent = [e for batches in traffic.values() for batch in batches for e in batch]
    start = threading.Barrier(CONSUMERS)
    failures: list[BaseException] = []

    def consume(consumer: int) -> None:
        # Two consumers per shard (the factor): each takes its own partition keys, in order, like Lambda does.
        shard = f"shardId-{consumer % SHARDS:012d}"
        try:
            start.wait()
            for n, batch in enumerate(traffic[consumer]):
                first_sequence = 10_000 * consumer + 100 * n  # increasing along the shard, apart from the other's
                records = [dataclasses.replace(r, shard_id=shard) for r in stream_records(batch, first_sequence)]
                assert handler(kinesis_batch(records)) == {"batchItemFailures": []}
                if n == 0:  # the mapping delivers the first batch again (a retry after a timeout)
                    assert handler(kinesis_batch(records)) == {"batchItemFailures": []}
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=consume, args=(c,), name=f"consumer-{c}") for c in range(CONSUMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)

    # Consumers competed for the lock, no two updates ever overlapped, and none learned more than a buffer's worth.
    # How many ran depends on timing: a consumer turned away leaves its events for the next batch's update.
    spans = sorted(updates.spans)
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in itertools.pairwise(spans))
    assert updates.refused > 0 and len(spans) >= 2
    assert all(0 < len(update) <= BUFFER_SIZE for update in updates.learned)
    assert redis_client.get(Keys.ONLINE_LOCK) is None

    # Each event was counted and buffered once, and learned by at most one update; what no update learned yet is
    # still buffered. Together, they are every event sent, each once.
    assert int(redis_client.get(Keys.RETRAIN_NEW_INTERACTIONS)) == len(sent)
    assert int(redis_client.get(Keys.ONLINE_SEQUENCE)) == len(sent)
    buffered = [entry.event.event_id for entry in OnlineBuffer(redis_client, get_settings()).oldest(len(sent))]
    learned = [event_id for update in updates.learned for event_id in update]
    assert Counter(learned + buffered) == Counter(e.event_id for e in sent)
    stats = redis_client.hgetall(Keys.ONLINE_STATS)
    ran = int(stats.get(UpdateOutcome.PUBLISHED.value, 0)) + int(stats.get(UpdateOutcome.ROLLED_BACK.value, 0))
    assert ran == len(updates.learned) == int(stats["total_updates"])

    # Online learning saw each user's events in the order they were sent.
    seen: dict[str, list[str]] = defaultdict(list)
    by_id = {e.event_id: e for e in sent}
    for event_id in learned + buffered:
        seen[by_id[event_id].user_id].append(event_id)
    for user, ids in seen.items():
        assert ids == [e.event_id for e in sent if e.user_id == user]

    # The features took each event once.
    purchases = Counter(e.item_id for e in sent if e.event_type == "purchase")
    for item, count in purchases.items():
        assert redis_client.hget(Keys.item_features(item), "cnt:purchase") == str(count)
