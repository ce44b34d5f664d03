"""The stream consumer's per-record work over real Redis and moto S3: idempotent on redelivery."""

import base64
import json

import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.queues import Queue
from recloop.adapters.redis import Keys
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.handlers.http.schemas import InteractionIn
from recloop.handlers.stream import process_kinesis_batch
from recloop.ingest.consumer import DeadLetters, PoisonRecordError, StreamConsumer, StreamRecord, archive_key
from recloop.learning.online.buffer import OnlineBuffer
from tests.support.environment import TEST_BUCKET
from tests.support.stream import kinesis_batch

T0 = 1_700_000_000.0


def record(seq: str, user: str = "u1", item: str = "i1", kind: str = "like", event_id: str | None = None):
    event = InteractionIn(user_id=user, item_id=item, event_type=kind, timestamp=T0, event_id=event_id or f"e{seq}")
    return StreamRecord("shardId-000000000000", seq, event.to_event(T0).to_record())


@pytest.fixture
def consumer(aws, redis_client: redis.Redis) -> StreamConsumer:
    return StreamConsumer(
        FeatureStore(redis_client, Settings.from_env({})),
        ObjectStore(aws["s3"], TEST_BUCKET),
        OnlineBuffer(redis_client, Settings.from_env({})),
    )


def archived(aws) -> dict[str, bytes]:
    listing = aws["s3"].list_objects_v2(Bucket=TEST_BUCKET, Prefix="events/").get("Contents", [])
    return {o["Key"]: aws["s3"].get_object(Bucket=TEST_BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def test_a_record_is_archived_applied_and_buffered(consumer: StreamConsumer, aws, redis_client) -> None:
    consumer.process(record("101"))
    key = archive_key(record("101").interaction)
    assert key == "events/dt=2023-11-14/e101.jsonl"
    assert json.loads(archived(aws)[key])["event_id"] == "e101"
    assert redis_client.hget(Keys.item_features("i1"), "cnt:like") == "1"
    assert consumer.buffer_size() == 1


def test_a_redelivered_batch_changes_nothing(consumer: StreamConsumer, aws, redis_client) -> None:
    batch = [record("201"), record("202", user="u2")]
    for r in batch:
        consumer.process(r)
    def state() -> tuple:
        buffered = redis_client.lrange(Keys.ONLINE_BUFFER, 0, -1)
        return archived(aws), redis_client.hgetall(Keys.item_features("i1")), buffered

    before = state()
    for r in batch:
        consumer.process(r)
    after = state()
    assert after == before and len(after[2]) == 2


def test_an_event_the_event_path_already_applied_counts_once(consumer: StreamConsumer, redis_client) -> None:
    first = record("301", event_id="client-1")
    consumer.store.apply(first.interaction)  # what POST /event did before the stream delivered it
    consumer.process(first)
    assert redis_client.hget(Keys.item_features("i1"), "cnt:like") == "1"
    assert consumer.buffer_size() == 1  # but it is still learned from


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not an interaction"),
        (b'{"event_id": "x"}', "user_id"),
        (b'{"event_type": "teleport"}', "event_type"),
    ],
)
def test_a_poison_record_fails_alone_with_its_reason(consumer: StreamConsumer, aws, data: bytes, reason: str) -> None:
    with pytest.raises(PoisonRecordError, match=reason):
        consumer.process(StreamRecord("shardId-000000000000", "401", data))
    assert archived(aws) == {} and consumer.buffer_size() == 0


def test_the_archive_is_written_once_per_event_id(consumer: StreamConsumer, aws) -> None:
    consumer.process(record("501", item="first", event_id="e-5"))
    consumer.process(record("502", item="second", event_id="e-5"))  # the same event id: the archive keeps the first
    (body,) = archived(aws).values()
    assert json.loads(body)["item_id"] == "first"


def test_a_client_retry_on_the_stream_twice_is_archived_applied_and_buffered_once(
    consumer: StreamConsumer, aws, redis_client
) -> None:
    """The event path puts a client's retry on the stream again (new sequence number, same event id)."""
    consumer.process(record("511", event_id="retried"))
    consumer.process(record("517", event_id="retried"))
    assert len(archived(aws)) == 1
    assert redis_client.hget(Keys.item_features("i1"), "cnt:like") == "1"
    assert consumer.buffer_size() == 1


@pytest.fixture
def dead_letters(aws):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    return DeadLetters(Queue(sqs, sqs.create_queue(QueueName="recloop-test-dlq")["QueueUrl"]))


def test_a_poison_record_goes_to_the_dead_letters_and_the_rest_is_processed(consumer, dead_letters, aws) -> None:
    poison = StreamRecord("shardId-000000000000", "602", b'{"user_id": "u"}')
    reply = process_kinesis_batch(kinesis_batch([record("601"), poison, record("603")]), consumer, dead_letters)
    assert reply == {"batchItemFailures": []}  # the poison record does not block the shard
    assert len(archived(aws)) == 2 and consumer.buffer_size() == 2
    (message,) = dead_letters.queue.sqs.receive_message(QueueUrl=dead_letters.queue.queue_url)["Messages"]
    body = json.loads(message["Body"])
    assert body["sequence_number"] == "602" and "item_id" in body["reason"]
    assert base64.b64decode(body["data_base64"]) == poison.data


def test_a_passing_failure_is_reported_for_retry_and_loses_nothing(consumer, dead_letters, monkeypatch) -> None:
    def redis_down(*_, **__):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(consumer.store, "apply_many", redis_down)
    reply = process_kinesis_batch(kinesis_batch([record("701")]), consumer, dead_letters)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "701"}]}
    assert "Messages" not in dead_letters.queue.sqs.receive_message(QueueUrl=dead_letters.queue.queue_url)
    monkeypatch.undo()
    assert process_kinesis_batch(kinesis_batch([record("701")]), consumer, dead_letters) == {"batchItemFailures": []}
    assert consumer.buffer_size() == 1


def test_an_archive_write_that_fails_fails_only_its_record(consumer, dead_letters, aws, monkeypatch) -> None:
    """Archive writes of a batch run concurrently; the record whose write failed is retried, the others go on."""
    put = consumer.objects.s3.put_object

    def flaky_put(**kwargs):
        if kwargs["Key"].endswith("/e802.jsonl"):
            raise consumer.objects.s3.exceptions.ClientError(
                {"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject"
            )
        return put(**kwargs)

    monkeypatch.setattr(consumer.objects.s3, "put_object", flaky_put)
    batch = kinesis_batch([record(str(n), item=f"i{n}") for n in range(801, 821)])
    reply = process_kinesis_batch(batch, consumer, dead_letters)
    # Kinesis retries from the first failure; the records after it are idempotent on the retry.
    assert reply["batchItemFailures"][0] == {"itemIdentifier": "802"}
    assert len(archived(aws)) == 19 and consumer.buffer_size() == 19
    monkeypatch.undo()
    assert process_kinesis_batch(batch, consumer, dead_letters) == {"batchItemFailures": []}
    assert len(archived(aws)) == 20 and consumer.buffer_size() == 20
