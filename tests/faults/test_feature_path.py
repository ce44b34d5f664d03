"""Faults on the way from POST /api/v1/event to the features and the online-learning buffer.

A real Redis of the test's own (append-only file on, as in production) is killed or frozen at a chosen point; the
tests that stop no server run on the session's Redis (a cluster under RECLOOP_TEST_REDIS=cluster, where
test_redis_cluster_failover kills a primary instead). The event function and the stream function run in-process
over moto's Kinesis and S3. Every test ends on the exact state a user relies on: each event counted once in the
features, buffered once, archived once.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.client
import pytest
import redis

from local.inprocess import ApiClient, LambdaContext, load_function
from recloop.adapters.redis import RUN_COMMANDS, Keys, WriteBatch
from recloop.container import get_container, reset_container
from recloop.features import store as store_module
from tests.faults.redis_process import RedisProcess
from tests.support.archive import archived_event_ids
from tests.support.environment import REGION, TEST_STREAM

Deployed = tuple[ApiClient, Callable[[], dict]]


@pytest.fixture
def deployed(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Deployed:
    """The event API and the stream function over the session's Redis."""
    return deploy(aws, None, monkeypatch)


@pytest.fixture
def deployed_on_server(aws: dict[str, Any], server: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> Deployed:
    """The event API and the stream function over `server`, the test's own, to kill or freeze."""
    return deploy(aws, server.url, monkeypatch)


def deploy(aws: dict[str, Any], redis_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Deployed:
    """The functions over `redis_url` (None: the session's); claims short-lived so the tests wait seconds, not ten."""
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-faults-dlq")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)
    if redis_url is not None:
        monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setattr(store_module, "PENDING_CLAIM_SECONDS", 2)
    monkeypatch.setattr(store_module, "APPLY_DEADLINE_SECONDS", 1.0)
    reset_container()
    stream_function = load_function("online_update")

    def consume() -> dict:
        """Deliver everything on the stream to the stream function, as the event source mapping does."""
        return stream_function.lambda_handler(stream_batch(aws["kinesis"]), LambdaContext())

    return ApiClient(), consume


def stream_batch(kinesis: Any) -> dict:
    shard = kinesis.describe_stream(StreamName=TEST_STREAM)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=TEST_STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return {
        "Records": [
            {
                "eventID": f"{shard}:{r['SequenceNumber']}",
                "eventSource": "aws:kinesis",
                "kinesis": {
                    "sequenceNumber": r["SequenceNumber"],
                    "partitionKey": r["PartitionKey"],
                    "data": base64.b64encode(r["Data"]).decode(),
                    "kinesisSchemaVersion": "1.0",
                    "approximateArrivalTimestamp": 0,
                },
            }
            for r in records
        ]
    }


def counted(client: redis.Redis, user: str, item: str, kind: str) -> dict[str, Any]:
    """What the features say about one (user, item, kind) and how the event was kept downstream."""
    return {
        "item_count": client.hget(Keys.item_features(item), f"cnt:{kind}"),
        "user_count": client.hget(Keys.user_features(user), f"cnt:{kind}"),
        "global_count": client.hget(Keys.COUNTERS, f"events:{kind}"),
        "buffered": client.llen(Keys.ONLINE_BUFFER),
    }


def archived(aws: dict[str, Any]) -> list[str]:
    """The event ids retraining reads back from the archive (a retry on the stream archives an event again)."""
    return archived_event_ids(aws["s3"])


ONCE = {"item_count": "1", "user_count": "1", "global_count": "1", "buffered": 1}


@pytest.mark.single_node("kills its own server and restarts it from the append-only file (a cluster: failover test)")
def test_redis_killed_between_claim_and_update_leaves_the_event_to_the_consumer(
    deployed_on_server, server: RedisProcess, aws, monkeypatch
) -> None:
    api, consume = deployed_on_server
    clock = get_container().store.clock
    observe = clock.observe

    def killed_after_the_claim(values: Any) -> None:
        observe(values)
        server.kill()  # the claims are taken, the update not yet sent

    monkeypatch.setattr(clock, "observe", killed_after_the_claim)
    status, reply = api.post_event(user_id="u1", item_id="i1", event_type="click", event_id="ev-kill-1")
    assert status == 202 and reply["features_updated"] is False  # durable on the stream; applied later
    monkeypatch.undo()
    monkeypatch.setattr(store_module, "PENDING_CLAIM_SECONDS", 2)
    monkeypatch.setattr(store_module, "APPLY_DEADLINE_SECONDS", 1.0)

    server.start()  # back from its append-only file: the claim is there, pending, and nothing was applied
    client = server.client()
    seen = Keys.user_event_seen("u1", "ev-kill-1")
    assert client.get(seen) not in (None, store_module.DONE) and client.ttl(seen) <= 2
    assert client.hget(Keys.item_features("i1"), "cnt:click") is None

    assert consume() == {"batchItemFailures": []}  # waits out the pending claim, then applies the event itself
    assert counted(client, "u1", "i1", "click") == ONCE and client.get(seen) == store_module.DONE
    assert consume() == {"batchItemFailures": []}  # a redelivery changes nothing
    assert counted(client, "u1", "i1", "click") == ONCE and len(archived(aws)) == 1


@pytest.mark.single_node("freezes its own server, a single node, as the update's script is sent")
def test_redis_frozen_during_the_update_applies_it_once_when_it_wakes(
    deployed_on_server, server: RedisProcess, aws, monkeypatch
) -> None:
    """The client times out on an update the server holds; the server then applies it in full, claim and all,
    so the consumer finds the event done and the client's retry is a duplicate."""
    api, consume = deployed_on_server
    execute = WriteBatch.execute

    def execute_frozen(batch: WriteBatch) -> None:
        server.freeze()
        execute(batch)

    monkeypatch.setattr(WriteBatch, "execute", execute_frozen)
    server.client().script_load(RUN_COMMANDS)  # as after any earlier update: the frozen call is the update itself
    status, reply = api.post_event(user_id="u2", item_id="i2", event_type="like", event_id="ev-freeze-1")
    assert status == 202 and reply["features_updated"] is False
    monkeypatch.setattr(WriteBatch, "execute", execute)
    server.thaw()

    client = server.client()
    deadline = time.monotonic() + 5
    while client.get(Keys.user_event_seen("u2", "ev-freeze-1")) != store_module.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted(client, "u2", "i2", "like") == {**ONCE, "buffered": 0}
    assert consume() == {"batchItemFailures": []}
    status, retry = api.post_event(user_id="u2", item_id="i2", event_type="like", event_id="ev-freeze-1")
    assert status == 202 and retry["status"] == "duplicate"
    assert consume() == {"batchItemFailures": []}  # the retry went on the stream too: buffered and archived once
    assert counted(client, "u2", "i2", "like") == ONCE and len(archived(aws)) == 1


def test_a_client_retry_put_on_the_stream_twice_is_learned_from_once(deployed, redis_client, aws) -> None:
    api, consume = deployed
    for _ in range(3):
        assert api.post_event(user_id="u3", item_id="i3", event_type="purchase", event_id="ev-retry-1")[0] == 202
    assert len(stream_batch(aws["kinesis"])["Records"]) == 3  # each retry is on the stream
    assert consume() == {"batchItemFailures": []}
    client = redis_client
    assert counted(client, "u3", "i3", "purchase") == ONCE and len(archived(aws)) == 1


def test_a_first_event_dated_2000_does_not_poison_the_decay_epoch(deployed, redis_client) -> None:
    api, consume = deployed
    status, old = api.post_event(user_id="u4", item_id="old", event_type="like", timestamp=946_684_800.0)
    assert status == 202 and old["features_updated"] is True
    for n in range(3):
        status, reply = api.post_event(user_id=f"u5-{n}", item_id="new", event_type="like")
        assert status == 202 and reply["features_updated"] is True
    assert consume() == {"batchItemFailures": []}
    client = redis_client
    epoch = float(client.hget(Keys.DECAY, "epoch"))
    assert abs(epoch - time.time()) < 60  # the server's time, not the first event's
    assert client.hget(Keys.item_features("new"), "cnt:like") == "3"
    assert get_container().store.top_popular(1)[0][0] == "new"


def test_a_partial_putrecords_failure_refuses_only_those_events_and_a_retry_counts_once(
    deployed, redis_client, aws, monkeypatch
) -> None:
    """Kinesis took some records of a batch and throttled the others: the throttled events are reported as not
    accepted and nothing of them is written; the client retries them, and everything counts once."""
    api, consume = deployed
    kinesis = get_container().stream.client
    assert isinstance(kinesis, botocore.client.BaseClient)  # the real client; only its reply is altered
    put_records = kinesis.put_records

    def second_record_throttled(**kwargs: Any) -> dict:
        records = kwargs["Records"]
        reply = put_records(**{**kwargs, "Records": [r for n, r in enumerate(records) if n != 1]})
        results = list(reply["Records"])
        results.insert(1, {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"})
        return {**reply, "FailedRecordCount": 1, "Records": results}

    monkeypatch.setattr(kinesis, "put_records", second_record_throttled)
    batch = [{"user_id": "u6", "item_id": f"p{n}", "event_type": "click", "event_id": f"ev-part-{n}"} for n in range(3)]
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": batch})
    assert status in (202, 207), reply
    assert [r["status"] for r in reply["results"]] == ["accepted", "failed", "accepted"]
    client = redis_client
    assert client.hget(Keys.item_features("p1"), "cnt:click") is None  # nothing of the refused event written
    monkeypatch.setattr(kinesis, "put_records", put_records)

    status, again = api.request("event", "POST", "/api/v1/events/batch", {"events": batch})  # the client retries
    assert status == 202 and [r["status"] for r in again["results"]] == ["duplicate", "accepted", "duplicate"]
    assert consume() == {"batchItemFailures": []}
    for n in range(3):
        assert client.hget(Keys.item_features(f"p{n}"), "cnt:click") == "1"
    assert client.hget(Keys.user_features("u6"), "cnt:click") == "3"
    assert client.llen(Keys.ONLINE_BUFFER) == 3 and len(archived(aws)) == 3


def test_a_fault_after_the_stream_write_loses_no_event_of_the_batch(deployed, redis_client, monkeypatch):
    """A NaN timestamp once got past validation and broke the update after the stream held the batch: every event
    stayed claimed and the consumer skipped them. Now such an event is refused up front (422), and any fault while
    building the update gives the claims back, so the consumer applies the whole batch at once."""
    api, consume = deployed
    status, reply = api.post_event(user_id="u7", item_id="n", event_type="view", timestamp=float("nan"))
    assert status == 422 and "timestamp" in str(reply)

    trending = get_container().store.trending
    monkeypatch.setattr(trending, "add", lambda *a, **k: (_ for _ in ()).throw(OverflowError("a fault of ours")))
    batch = [{"user_id": "u7", "item_id": f"b{n}", "event_type": "view", "event_id": f"ev-bug-{n}"} for n in range(4)]
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": batch})
    assert status == 202 and all(r["features_updated"] is False for r in reply["results"])
    client = redis_client
    assert not any(client.exists(Keys.user_event_seen("u7", f"ev-bug-{n}")) for n in range(4))  # given back
    monkeypatch.undo()
    monkeypatch.setattr(store_module, "PENDING_CLAIM_SECONDS", 2)

    started = time.monotonic()
    assert consume() == {"batchItemFailures": []}
    assert time.monotonic() - started < 1.5  # no claim to wait out
    assert client.hget(Keys.user_features("u7"), "cnt:view") == "4" and client.llen(Keys.ONLINE_BUFFER) == 4
