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
from recloop.ingest.consumer import DeadLetters, PoisonRecordError, StreamConsumer, StreamRecord
from recloop.learning.archive import prepare_dataset
from recloop.learning.online.buffer import OnlineBuffer
from tests.support.archive import archive_objects, archived_event_ids
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
    ((key, body),) = archived(aws).items()
    assert key.startswith("events/dt=2023-11-14/shardId-000000000000/101-101-") and key.endswith(".jsonl")
    assert json.loads(body)["event_id"] == "e101"
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


def test_an_event_id_archived_twice_is_read_back_once(consumer: StreamConsumer, aws) -> None:
    consumer.process(record("501", item="first", event_id="e-5"))
    consumer.process(record("502", item="second", event_id="e-5"))  # the same event id: readers keep the first
    assert len(archived(aws)) == 2
    (event,) = prepare_dataset(consumer.objects)
    assert (event.event_id, event.item_id) == ("e-5", "first")


def test_a_client_retry_on_the_stream_twice_is_archived_applied_and_buffered_once(
    consumer: StreamConsumer, aws, redis_client
) -> None:
    """The event path puts a client's retry on the stream again (new sequence number, same event id)."""
    consumer.process(record("511", event_id="retried"))
    consumer.process(record("517", event_id="retried"))
    assert archived_event_ids(aws["s3"]) == ["retried"]
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
    assert list(archive_objects(aws["s3"]).values()) == [["e601", "e603"]] and consumer.buffer_size() == 2
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


def slow_down_on(consumer: StreamConsumer, monkeypatch, day: str) -> None:
    """S3 refuses the archive writes of one day's objects."""
    put = consumer.objects.s3.put_object

    def flaky_put(**kwargs):
        if kwargs["Key"].startswith(f"events/dt={day}/"):
            raise consumer.objects.s3.exceptions.ClientError(
                {"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject"
            )
        return put(**kwargs)

    monkeypatch.setattr(consumer.objects.s3, "put_object", flaky_put)


def test_a_batch_whose_archive_write_fails_is_retried_whole(consumer, dead_letters, aws, monkeypatch) -> None:
    """No record counts as processed before it is archived: the batch's object failed, so every record is retried."""
    slow_down_on(consumer, monkeypatch, "2023-11-14")
    batch = kinesis_batch([record(str(n), item=f"i{n}") for n in range(801, 821)])
    reply = process_kinesis_batch(batch, consumer, dead_letters)
    assert reply["batchItemFailures"] == [{"itemIdentifier": str(n)} for n in range(801, 821)]
    assert archived(aws) == {} and consumer.buffer_size() == 0
    monkeypatch.undo()
    assert process_kinesis_batch(batch, consumer, dead_letters) == {"batchItemFailures": []}
    assert len(archived(aws)) == 1 and consumer.buffer_size() == 20


def test_an_archive_write_that_fails_fails_only_the_records_of_its_day(consumer, dead_letters, aws, monkeypatch):
    """A batch's events of two days go to two objects: the records of the one not written are retried."""
    late = InteractionIn(user_id="u9", item_id="i9", event_type="view", timestamp=T0 + 86_400, event_id="e-next-day")
    next_day = StreamRecord("shardId-000000000000", "903", late.to_event(T0).to_record())
    slow_down_on(consumer, monkeypatch, "2023-11-15")
    batch = kinesis_batch([record("901"), record("902", user="u2"), next_day, record("904", user="u3")])
    reply = process_kinesis_batch(batch, consumer, dead_letters)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "903"}]}
    assert list(archive_objects(aws["s3"]).values()) == [["e901", "e902", "e904"]] and consumer.buffer_size() == 3
    monkeypatch.undo()
    # Kinesis retries from the failed record on: its day's object is written, the rest changes nothing.
    retry = kinesis_batch([next_day, record("904", user="u3")])
    assert process_kinesis_batch(retry, consumer, dead_letters) == {"batchItemFailures": []}
    assert archived_event_ids(aws["s3"]) == ["e-next-day", "e901", "e902", "e904"] and consumer.buffer_size() == 4


def test_a_bisected_retry_archives_its_halves_again_and_training_reads_each_event_once(consumer, dead_letters, aws):
    batch = [record(str(n), item=f"i{n}") for n in range(1001, 1011)]
    assert process_kinesis_batch(kinesis_batch(batch), consumer, dead_letters) == {"batchItemFailures": []}
    for half in (batch[:5], batch[5:]):  # the mapping bisected the batch after a function error
        assert process_kinesis_batch(kinesis_batch(half), consumer, dead_letters) == {"batchItemFailures": []}
    assert len(archived(aws)) == 3
    assert archived_event_ids(aws["s3"]) == sorted(f"e{n}" for n in range(1001, 1011))
    assert consumer.buffer_size() == 10


def test_a_batch_is_applied_and_buffered_once_in_stream_order(consumer, dead_letters, redis_client) -> None:
    batch = [record(str(1000 + n), user=f"u{n % 7}", item=f"i{n % 11}") for n in range(100)]
    for _ in range(2):  # a redelivery changes nothing
        assert process_kinesis_batch(kinesis_batch(batch), consumer, dead_letters) == {"batchItemFailures": []}
    buffered = [json.loads(raw.split(" ", 1)[1])["event_id"] for raw in redis_client.lrange(Keys.ONLINE_BUFFER, 0, -1)]
    assert buffered == [f"e{1000 + n}" for n in range(100)]
    assert sum(int(redis_client.hget(Keys.item_features(f"i{n}"), "cnt:like")) for n in range(11)) == 100


@pytest.mark.single_node("counts the packets sent to one server (a cluster pipeline sends one per node and slot)")
def test_a_batch_takes_a_few_round_trips_not_a_few_per_record(consumer, dead_letters, redis_client, monkeypatch):
    warm = [record("999", user="u0", item="i0", kind="view")]  # the scripts loaded, as after any earlier batch
    assert process_kinesis_batch(kinesis_batch(warm), consumer, dead_letters) == {"batchItemFailures": []}
    batch = [record(str(1000 + n), user=f"u{n % 7}", item=f"i{n % 11}") for n in range(100)]
    sent = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(connection, command, check_health=True):
        sent.append(command)
        return send(connection, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    assert process_kinesis_batch(kinesis_batch(batch), consumer, dead_letters) == {"batchItemFailures": []}
    # The batch's claims, its update, its buffer pipeline and the script check before it.
    assert len(sent) <= 5
    assert consumer.buffer_size() == 101


def test_an_event_still_applied_elsewhere_waits_and_the_buffer_keeps_the_stream_order(
    consumer, dead_letters, redis_client
) -> None:
    batch = [record(str(1100 + n), user="u1", item=f"i{n}") for n in range(5)]
    # The event path holds the third event's pending claim, and dies before applying it: the claim expires.
    redis_client.set(Keys.user_event_seen("u1", "e1102"), "another-applier", ex=1)
    assert process_kinesis_batch(kinesis_batch(batch), consumer, dead_letters) == {"batchItemFailures": []}
    buffered = [json.loads(raw.split(" ", 1)[1])["event_id"] for raw in redis_client.lrange(Keys.ONLINE_BUFFER, 0, -1)]
    assert buffered == [f"e{1100 + n}" for n in range(5)]
    assert all(redis_client.hget(Keys.item_features(f"i{n}"), "cnt:like") == "1" for n in range(5))
    assert redis_client.hget(Keys.user_features("u1"), "cnt:like") == "5"
