"""The interaction stream with several shards, end to end: the E2E profile deploys it with 4 shards and the consumer
(OnlineUpdateFunction's event source mapping) with a ParallelizationFactor of 2. Events go through the API; the
partition key is the user, so each user's events stay on one shard in order, and the consumer buffers them for
online learning in that order. A shard split while events are being posted loses none and applies none twice.

What LocalStack (2026.3, core) does with the mapping, read in its code
(localstack/services/lambda_/event_source_mapping/pollers/stream_poller.py) and seen in these runs:

- ParallelizationFactor is accepted and reported back, but not acted on: one poller thread per mapping reads the
  shards round-robin and invokes the function with one batch at a time (never two invocations at once). These tests
  therefore show no concurrent consumers; tests/integration/learning/test_shard_consumers.py runs them (threads
  calling the function's entry point at once against one Redis).
- After a split, the poller reads the closed parent to its end, then lists the shards again and reads the children
  from TRIM_HORIZON: no record is lost and the parent's records come before its children's, as on AWS. But each
  time it reaches the parent's end it lists the shards again and starts the parent over from TRIM_HORIZON, for as
  long as the stream keeps its records: the parent's records are delivered again and again (AWS delivers them
  once). The consumer counts each event once however often it comes, which the split test checks. The replays go
  on until LocalStack stops, so the split test runs last in the session (`runs_last`), and drain_stream deletes the
  markers of earlier drains that they bring back to the dead-letter queue.
- Listing the shards again also starts every shard listed *before* the parent over from TRIM_HORIZON, each time
  (the poller finishes its round through the old list, carrying over the positions of the shards after the parent
  only): a shard with more records than the parent is never read to its end again, and records put on it after
  the split are never delivered. With shardId-000000000002 of 4 split, markers put on shards 0 and 1 were not
  delivered in 90 s while their 400 old records each came round again and again; with shardId-000000000000 split,
  every marker came. So the split test splits the first shard; on AWS any shard can be split.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from local.runtime import RunningStack
from local.services import E2E
from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from tests.e2e.conftest import Http, drain_stream, runs_last

pytestmark = pytest.mark.e2e

POSTERS = 4  # clients posting at once (each user's events one after the other)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def traffic(users: list[str], per_user: int) -> dict[str, list[dict[str, Any]]]:
    """Each user's events in the order the user sends them (client-chosen ids, increasing timestamps)."""
    now = time.time() - 3600
    kinds = ("view", "click", "like", "purchase")
    return {
        user: [
            {
                "event_id": f"{user}-e{n}",
                "user_id": user,
                "item_id": f"{user.rsplit('-', 1)[0]}-i{(u + n) % 7}",
                "event_type": kinds[n % len(kinds)],
                "timestamp": now + n,
            }
            for n in range(per_user)
        ]
        for u, user in enumerate(users)
    }


def post(http: Http, event: dict[str, Any]) -> None:
    """Post one event as a client does: retry with the same id until the API has it (202)."""
    for _ in range(10):
        status, reply = http.post("/api/v1/event", event)
        if status == 202:
            assert reply["event_id"] == event["event_id"], reply
            return
        time.sleep(0.5)
    raise AssertionError(f"event {event['event_id']} not accepted: {status} {reply}")


def post_in_waves(http: Http, events: dict[str, list[dict[str, Any]]], between: dict[int, Any] | None = None) -> None:
    """Wave n posts every user's n-th event, several clients at once; a wave starts when the one before it is
    answered, so each user's events reach the stream in order. `between[n]` runs alongside wave n."""
    waves = max(len(user_events) for user_events in events.values())
    with ThreadPoolExecutor(POSTERS) as pool:
        for n in range(waves):
            alongside = pool.submit((between or {}).get(n, lambda: None))
            list(pool.map(lambda e: post(http, e), [user_events[n] for user_events in events.values()]))
            alongside.result()


def stream_records(stack: RunningStack, aws: Any, prefix: str) -> list[dict[str, Any]]:
    """Every record on the stream (closed shards too) of a user whose id starts with `prefix`, per shard in
    sequence order: shard, sequence number, partition key and the event."""
    kinesis, stream = aws("kinesis"), stack.outputs["StreamName"]
    found = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                event = json.loads(record["Data"])
                if event.get("user_id", "").startswith(prefix):
                    found.append(
                        {
                            "shard": shard["ShardId"],
                            "sequence": int(record["SequenceNumber"]),
                            "key": record["PartitionKey"],
                            "event": event,
                        }
                    )
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return found


def stream_summary(stack: RunningStack, aws: Any) -> dict[str, Any]:
    return aws("kinesis").describe_stream_summary(StreamName=stack.outputs["StreamName"])["StreamDescriptionSummary"]


def open_shards(stack: RunningStack, aws: Any) -> list[dict[str, Any]]:
    shards = aws("kinesis").list_shards(StreamName=stack.outputs["StreamName"])["Shards"]
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def shard_of(key: str, shards: list[dict[str, Any]]) -> str:
    """The shard Kinesis puts a partition key on: the one whose hash key range holds the key's MD5."""
    hashed = int(hashlib.md5(key.encode()).hexdigest(), 16)  # Kinesis' own choice of hash
    (shard,) = [
        s["ShardId"]
        for s in shards
        if int(s["HashKeyRange"]["StartingHashKey"]) <= hashed <= int(s["HashKeyRange"]["EndingHashKey"])
    ]
    return shard


@contextmanager
def updates_held_off(client: redis.Redis) -> Iterator[None]:
    """Hold the online-update lock, so that no update trims the buffer: it keeps every event the consumer buffers,
    in the order it buffered them (the consumer finds the lock taken and goes on)."""
    token = unique("e2e-stream-shards")
    assert client.set(Keys.ONLINE_LOCK, token, nx=True, ex=900)
    try:
        yield
    finally:
        if client.get(Keys.ONLINE_LOCK) == token:
            client.delete(Keys.ONLINE_LOCK)


class BufferLog:
    """Every entry the consumer appends to the online-learning buffer, by its sequence number, read as they come
    (past its limit the buffer drops its oldest entries; reading it often keeps them all)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.entries: dict[int, Interaction] = {}
        self.last = 0  # the last sequence number given when the buffer was last read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="buffer-log", daemon=True)

    def __enter__(self) -> BufferLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.read()

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self.read()

    def read(self) -> None:
        """The buffer and its last sequence number at one moment (one transaction), entries as the buffer keeps
        them: "<sequence> <event JSON>"."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(Keys.ONLINE_SEQUENCE)
        pipe.lrange(Keys.ONLINE_BUFFER, 0, -1)
        last, raw_entries = pipe.execute()
        for raw in raw_entries:
            sequence, record = raw.split(" ", 1)
            if int(sequence) not in self.entries:
                self.entries[int(sequence)] = Interaction.model_validate_json(record)
        self.last = max(self.last, int(last or 0))

    def missing(self) -> list[int]:
        """Sequence numbers given by the last read that were never read (dropped before this log saw them)."""
        return sorted(set(range(1, self.last + 1)) - set(self.entries))

    def event_ids(self, prefix: str) -> list[str]:
        """The buffered event ids of users whose id starts with `prefix`, in the order they were buffered."""
        return [self.entries[s].event_id for s in sorted(self.entries) if self.entries[s].user_id.startswith(prefix)]


def per_user(event_ids: list[str], events: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    user_of = {e["event_id"]: user for user, user_events in events.items() for e in user_events}
    grouped: dict[str, list[str]] = defaultdict(list)
    for event_id in event_ids:
        grouped[user_of[event_id]].append(event_id)
    return grouped


def test_the_stream_has_four_shards_and_the_consumer_takes_two_batches_of_each(stack: RunningStack, aws: Any):
    summary = stream_summary(stack, aws)
    assert summary["StreamModeDetails"]["StreamMode"] == "PROVISIONED"
    assert summary["OpenShardCount"] == E2E.stream_shard_count == 4
    mappings = aws("lambda").list_event_source_mappings(FunctionName=stack.outputs["OnlineUpdateFunctionName"])
    (mapping,) = [m for m in mappings["EventSourceMappings"] if m["EventSourceArn"] == stack.outputs["StreamArn"]]
    # Reported as configured; LocalStack does not run the batches of a shard in parallel (see the module's doc).
    assert mapping["ParallelizationFactor"] == E2E.stream_parallelization_factor == 2
    assert (mapping["BatchSize"], mapping["StartingPosition"], mapping["State"]) == (100, "TRIM_HORIZON", "Enabled")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_each_users_events_stay_on_one_shard_and_are_buffered_in_order(
    http: Http, stack: RunningStack, aws: Any, stack_redis: redis.Redis
) -> None:
    run = unique("shards")
    events = traffic([f"{run}-u{n}" for n in range(24)], per_user=5)
    sent = [e["event_id"] for user_events in events.values() for e in user_events]
    with updates_held_off(stack_redis), BufferLog(stack_redis) as log:
        post_in_waves(http, events)
        drain_stream(stack)

    # On the stream: the partition key is the user, each user's events are on one shard in the order sent, and the
    # users are spread over the shards.
    records = stream_records(stack, aws, run)
    assert Counter(r["event"]["event_id"] for r in records) == Counter(sent)
    assert all(r["key"] == r["event"]["user_id"] for r in records)
    shards_of_user: dict[str, set[str]] = defaultdict(set)
    for record in records:
        shards_of_user[record["key"]].add(record["shard"])
    assert all(len(shards) == 1 for shards in shards_of_user.values())
    shards = open_shards(stack, aws)
    assert all(shard_of(user, shards) == next(iter(s)) for user, s in shards_of_user.items())
    assert len(set().union(*shards_of_user.values())) > 1
    on_stream = [r["event"]["event_id"] for r in sorted(records, key=lambda r: (r["shard"], r["sequence"]))]
    assert per_user(on_stream, events) == {user: [e["event_id"] for e in evs] for user, evs in events.items()}

    # The consumer buffered each event once, each user's in the order sent, and counted each once.
    assert not log.missing(), f"{len(log.missing())} buffer entries dropped before they were read"
    buffered = log.event_ids(run)
    assert Counter(buffered) == Counter(sent)
    assert per_user(buffered, events) == {user: [e["event_id"] for e in evs] for user, evs in events.items()}
    assert int(stack_redis.get(Keys.RETRAIN_NEW_INTERACTIONS)) == len(sent)


@runs_last  # LocalStack re-reads the split shard until it stops (see the module's doc)
def test_a_shard_split_while_events_arrive_loses_none_and_applies_none_twice(
    http: Http, stack: RunningStack, aws: Any, stack_redis: redis.Redis
) -> None:
    kinesis, stream = aws("kinesis"), stack.outputs["StreamName"]
    run = unique("split")
    before = open_shards(stack, aws)
    # The first shard is split in the middle of its hash key range (LocalStack's poller would starve the shards
    # listed before any other one: see the module's doc); half of these users are on it.
    parent, parent_range = before[0]["ShardId"], before[0]["HashKeyRange"]  # ListShards lists them by id
    middle = (int(parent_range["StartingHashKey"]) + int(parent_range["EndingHashKey"])) // 2
    candidates = [f"{run}-u{n}" for n in range(400)]
    on_parent = [user for user in candidates if shard_of(user, before) == parent][:16]
    elsewhere = [user for user in candidates if shard_of(user, before) != parent][:16]
    events = traffic(on_parent + elsewhere, per_user=8)
    sent = [e["event_id"] for user_events in events.values() for e in user_events]

    def split() -> None:
        kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(middle))
        deadline = time.monotonic() + 60
        while stream_summary(stack, aws)["StreamStatus"] != "ACTIVE":
            assert time.monotonic() < deadline, "the stream did not become ACTIVE after the split"
            time.sleep(0.2)

    with updates_held_off(stack_redis), BufferLog(stack_redis) as log:
        post_in_waves(http, events, between={3: split})
        drain_stream(stack)  # markers on every open shard, the children too: the consumer reads them

    # The parent is closed, its two children took over its range.
    after = open_shards(stack, aws)
    children = [s for s in after if s.get("ParentShardId") == parent]
    assert len(after) == len(before) + 1 and len(children) == 2
    assert parent not in {s["ShardId"] for s in after}

    # On the stream: users of the parent went on on a child, each user's events still in the order sent.
    records = stream_records(stack, aws, run)
    assert Counter(r["event"]["event_id"] for r in records) == Counter(sent)
    waves_on: dict[tuple[str, str], list[int]] = defaultdict(list)
    for record in records:
        waves_on[record["key"], record["shard"]].append(int(record["event"]["event_id"].rsplit("-e", 1)[1]))
    for user in on_parent:  # waves 0 to 2 went to the parent, 4 to 7 to a child (wave 3 came with the split)
        parent_waves = waves_on[user, parent]
        child_waves = [n for child in children for n in waves_on.get((user, child["ShardId"]), [])]
        assert {0, 1, 2} <= set(parent_waves) and {4, 5, 6, 7} <= set(child_waves), user
        assert max(parent_waves) < min(child_waves), user
    assert all(len({shard for key, shard in waves_on if key == user}) == 1 for user in elsewhere)

    # The consumer: every event buffered exactly once, each user's in the order sent (across the split), counted
    # once in the features.
    assert not log.missing(), f"{len(log.missing())} buffer entries dropped before they were read"
    buffered = log.event_ids(run)
    assert Counter(buffered) == Counter(sent)
    assert per_user(buffered, events) == {user: [e["event_id"] for e in evs] for user, evs in events.items()}
    for user, user_events in events.items():
        features = stack_redis.hgetall(Keys.user_features(user))
        counts = {k.removeprefix("cnt:"): int(v) for k, v in features.items() if k.startswith("cnt:")}
        assert counts == Counter(e["event_type"] for e in user_events), user
