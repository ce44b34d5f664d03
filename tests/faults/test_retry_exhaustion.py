"""Retry exhaustion, then the replay tool.

Redis is unreachable (the function points at a closed port) for longer than the event source mapping's retries, as
template.yaml configures them: the stream function reports every record for retry on each of the 1 +
MaximumRetryAttempts attempts, then Lambda discards the batch and writes its on-failure record (in Lambda's
documented format, built here from the batch) to the failed-records bucket. Redis comes back,
`python -m recloop.tools.replay_failed` runs, and the end state is exact: every event counted once in the features,
buffered once for online learning, read back once from the archive; the failure object moved under replayed/; a
second run changes nothing. Real Redis (the session's redis-server), moto for S3, Kinesis and SQS.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import redis
from cfnlint.decode import decode

from local.inprocess import LambdaContext, load_function
from recloop.adapters.redis import Keys
from recloop.container import get_container, reset_container
from recloop.core.events import EventType, Interaction
from recloop.ingest.consumer import StreamRecord
from recloop.ingest.replay import FAILURES_PREFIX, REPLAYED_PREFIX
from recloop.tools import replay_failed
from tests.support.archive import archived_event_ids as read_back
from tests.support.environment import REGION, ROOT, TEST_STREAM
from tests.support.redis_state import redis_state
from tests.support.stream import kinesis_batch

FAILED_RECORDS_BUCKET = "recloop-test-failed-records"
MAPPING_UUID = "9d2b1c6e-4f1a-4c1e-9a7b-1f2e3d4c5b6a"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:recloop-OnlineUpdateFunction"
EVENTS = 24
T0 = float(int(time.time()))


def interactions_mapping() -> dict[str, Any]:
    template, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    return template["Resources"]["OnlineUpdateFunction"]["Properties"]["Events"]["Interactions"]["Properties"]


MAPPING = interactions_mapping()
ATTEMPTS = 1 + MAPPING["MaximumRetryAttempts"]


def test_the_mapping_writes_the_batches_it_gives_up_on_to_the_failed_records_bucket() -> None:
    on_failure = MAPPING["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["FailedRecordsBucket", "Arn"]}
    assert 0 <= MAPPING["MaximumRetryAttempts"] <= 10  # bounded: the shard moves on, the bucket keeps the batch
    assert MAPPING["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# --- the stack, in-process ---------------------------------------------------------------------------------------


@pytest.fixture
def stack(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The failed-records bucket and dead-letter queue beside the `aws` fixture's bucket and stream."""
    aws["s3"].create_bucket(Bucket=FAILED_RECORDS_BUCKET)
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="recloop-test-online-dlq")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)
    reset_container()
    return {**aws, "sqs": sqs, "queue": queue, "redis": redis_client}


def interactions(count: int = EVENTS, prefix: str = "e") -> list[Interaction]:
    kinds = [EventType.VIEW, EventType.CLICK, EventType.LIKE, EventType.PURCHASE]
    return [
        Interaction(
            event_id=f"{prefix}-{n:03d}",
            user_id=f"user{n % 5}",
            item_id=f"item{n % 7}",
            event_type=kinds[n % len(kinds)],
            timestamp=T0 + n,
            received_at=T0 + n,
        )
        for n in range(count)
    ]


def on_the_stream(stack: dict[str, Any], events: list[Interaction]) -> list[StreamRecord]:
    """Put the events on the (moto) stream and read them back as the mapping would: real shard and sequence numbers."""
    kinesis = stack["kinesis"]
    kinesis.put_records(StreamName=TEST_STREAM, Records=[{"Data": e.to_record(), "PartitionKey": "p"} for e in events])
    (shard,) = kinesis.list_shards(StreamName=TEST_STREAM)["Shards"]
    iterator = kinesis.get_shard_iterator(
        StreamName=TEST_STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    stored = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
    wanted = {e.to_record() for e in events}
    return [StreamRecord(shard["ShardId"], r["SequenceNumber"], r["Data"]) for r in stored if r["Data"] in wanted]


def mapping_batch(stack: dict[str, Any], records: list[StreamRecord]) -> dict:
    """The event the mapping invokes the function with, for these records of the test stream."""
    batch = kinesis_batch(records)
    arn = stack["kinesis"].describe_stream_summary(StreamName=TEST_STREAM)["StreamDescriptionSummary"]["StreamARN"]
    for record in batch["Records"]:
        record["eventSourceARN"] = arn
    return batch


def stream_function() -> Callable[[dict], dict]:
    module = load_function("online_update")
    return lambda event: module.lambda_handler(event, LambdaContext())


def closed_port() -> int:
    """A local TCP port nothing listens on: a connection is refused at once, as by a Redis that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("REDIS_TIMEOUT_SECONDS", "0.2")
    reset_container()


def redis_back(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("REDIS_TIMEOUT_SECONDS")
    reset_container()


def exhaust_retries(batch: dict, failing: list[StreamRecord] | None = None) -> None:
    """Every attempt the mapping makes reports every record (or those `failing`) for retry: a partial response,
    no function error, so the mapping neither bisects the batch nor retries it whole."""
    handler = stream_function()
    failed = [r["kinesis"]["sequenceNumber"] for r in batch["Records"]]
    if failing is not None:
        failed = [r.sequence_number for r in failing]
    for _ in range(ATTEMPTS):
        assert handler(batch) == {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failed]}


def on_failure_record(
    batch: dict, attempts: int, failed_at: datetime, *, with_payload: bool = True
) -> tuple[str, bytes]:
    """The object Lambda writes to an S3 on-failure destination when it discards a Kinesis batch: key
    aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>; body the invocation record
    (requestContext, responseContext, version, timestamp, KinesisBatchInfo) and `payload`, the invocation's event
    as an escaped JSON string. Without the payload it is what an SQS or SNS destination receives."""
    records = batch["Records"]
    first, last = records[0], records[-1]
    shard_id = first["eventID"].split(":", 1)[0]

    def arrival(record: dict) -> str:
        moment = datetime.fromtimestamp(record["kinesis"]["approximateArrivalTimestamp"], UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    body: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": FUNCTION_ARN,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": attempts,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": failed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first["kinesis"]["sequenceNumber"],
            "endSequenceNumber": last["kinesis"]["sequenceNumber"],
            "approximateArrivalOfFirstRecord": arrival(first),
            "approximateArrivalOfLastRecord": arrival(last),
            "batchSize": len(records),
            "streamArn": first["eventSourceARN"],
        },
    }
    if with_payload:
        body["payload"] = json.dumps(batch)
    key = (
        f"{FAILURES_PREFIX}{MAPPING_UUID}/{shard_id}/{failed_at:%Y/%m/%d}/{failed_at:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )
    return key, json.dumps(body).encode()


def given_up(stack: dict[str, Any], batch: dict, *, with_payload: bool = True) -> str:
    """The batch as the mapping discards it after its last attempt: its on-failure object in the bucket."""
    key, body = on_failure_record(batch, ATTEMPTS, datetime.now(UTC), with_payload=with_payload)
    stack["s3"].put_object(Bucket=FAILED_RECORDS_BUCKET, Key=key, Body=body)
    return key


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """`python -m recloop.tools.replay_failed --bucket ... *args`, in-process: exit code, totals, per-object lines."""
    reset_container()
    capsys.readouterr()
    code = replay_failed.main(["--bucket", FAILED_RECORDS_BUCKET, *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, lines[-1], lines[:-1]


# --- what the end state must be ----------------------------------------------------------------------------------


def expected_counters(events: list[Interaction]) -> dict[str, dict[str, str]]:
    expected: dict[str, Counter[str]] = {}
    for e in events:
        for key, name in (
            (Keys.user_features(e.user_id), f"cnt:{e.event_type.value}"),
            (Keys.item_features(e.item_id), f"cnt:{e.event_type.value}"),
            (Keys.COUNTERS, f"events:{e.event_type.value}"),
        ):
            expected.setdefault(key, Counter())[name] += 1
    return {key: {name: str(n) for name, n in counts.items()} for key, counts in expected.items()}


def counters(client: redis.Redis, events: list[Interaction]) -> dict[str, dict[str, str]]:
    keys = expected_counters(events)
    return {
        key: {name: value for name, value in client.hgetall(key).items() if name.startswith(("cnt:", "events:"))}
        for key in keys
    }


def buffered_event_ids() -> list[str]:
    buffer = get_container().stream_consumer.buffer
    return sorted(entry.event.event_id for entry in buffer.oldest(buffer.size() + 1))


def archived_event_ids(stack: dict[str, Any]) -> list[str]:
    """What retraining reads from the archive: a retry may archive an event again, training reads it once."""
    return read_back(stack["s3"])


def failure_objects(stack: dict[str, Any]) -> list[str]:
    listed = stack["s3"].list_objects_v2(Bucket=FAILED_RECORDS_BUCKET).get("Contents", [])
    return sorted(obj["Key"] for obj in listed)


def dead_letters(stack: dict[str, Any]) -> list[dict[str, Any]]:
    messages = stack["sqs"].receive_message(QueueUrl=stack["queue"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def assert_counted_once(stack: dict[str, Any], events: list[Interaction]) -> None:
    ids = sorted(e.event_id for e in events)
    assert counters(stack["redis"], events) == expected_counters(events)
    assert buffered_event_ids() == ids
    assert archived_event_ids(stack) == ids


# --- the faults --------------------------------------------------------------------------------------------------


def test_a_batch_given_up_during_a_redis_outage_is_replayed_once(stack, redis_url, monkeypatch, capsys) -> None:
    events = interactions()
    batch = mapping_batch(stack, on_the_stream(stack, events))

    redis_down(monkeypatch)
    exhaust_retries(batch)
    assert counters(stack["redis"], events) == {key: {} for key in expected_counters(events)}  # nothing applied
    key = given_up(stack, batch)

    redis_back(monkeypatch, redis_url)
    code, totals, (line,) = replay(capsys)

    assert code == 0
    assert totals == {
        "objects": 1,
        "records": EVENTS,
        "replayed": EVENTS,
        "duplicates": 0,
        "poison": 0,
        "failed": 0,
        "errors": 0,
        "marked": 1,
        "dry_run": False,
    }
    assert (line["key"], line["marked"], line["error"]) == (key, True, None)
    assert_counted_once(stack, events)
    assert failure_objects(stack) == [REPLAYED_PREFIX + key]  # the audit trail: the object, and what replaying did
    audit = stack["s3"].head_object(Bucket=FAILED_RECORDS_BUCKET, Key=REPLAYED_PREFIX + key)["Metadata"]
    assert {name: audit[name] for name in ("records", "replayed", "duplicates", "poison")} == {
        "records": str(EVENTS),
        "replayed": str(EVENTS),
        "duplicates": "0",
        "poison": "0",
    }
    assert dead_letters(stack) == []

    before = (redis_state(stack["redis"]), archived_event_ids(stack), failure_objects(stack))
    code, totals, lines = replay(capsys)  # a second run finds nothing left
    assert (code, lines, totals["objects"], totals["records"], totals["replayed"]) == (0, [], 0, 0, 0)
    assert (redis_state(stack["redis"]), archived_event_ids(stack), failure_objects(stack)) == before


def test_a_batch_half_applied_before_the_outage_counts_once(stack, redis_url, monkeypatch, capsys) -> None:
    events = interactions()
    records = on_the_stream(stack, events)
    half = EVENTS // 2
    assert stream_function()(mapping_batch(stack, records[:half])) == {"batchItemFailures": []}  # Redis up
    assert_counted_once(stack, events[:half])

    batch = mapping_batch(stack, records)  # the batch the mapping keeps retrying: the applied half comes again
    redis_down(monkeypatch)
    exhaust_retries(batch)
    given_up(stack, batch)

    redis_back(monkeypatch, redis_url)
    code, totals, _ = replay(capsys)

    assert (code, totals["records"], totals["replayed"], totals["failed"], totals["marked"]) == (
        0,
        EVENTS,
        EVENTS,
        0,
        1,
    )
    assert_counted_once(stack, events)


def test_a_failure_record_without_payload_is_read_back_from_the_stream(stack, redis_url, monkeypatch, capsys) -> None:
    events = interactions()
    batch = mapping_batch(stack, on_the_stream(stack, events))
    redis_down(monkeypatch)
    exhaust_retries(batch)
    given_up(stack, batch, with_payload=False)  # what an SQS destination holds: shard and sequence range only

    redis_back(monkeypatch, redis_url)
    code, totals, _ = replay(capsys)

    assert (code, totals["records"], totals["replayed"], totals["marked"]) == (0, EVENTS, EVENTS, 1)
    assert_counted_once(stack, events)


def test_a_replay_while_redis_is_still_down_keeps_the_record_for_the_next_run(
    stack, redis_url, monkeypatch, capsys
) -> None:
    events = interactions()
    batch = mapping_batch(stack, on_the_stream(stack, events))
    redis_down(monkeypatch)
    exhaust_retries(batch)
    key = given_up(stack, batch)

    code, totals, (line,) = replay(capsys)  # too early: Redis is still down

    assert code == 1
    assert (totals["records"], totals["replayed"], totals["failed"], totals["marked"]) == (EVENTS, 0, EVENTS, 0)
    assert "records failed again" in line["error"] and line["marked"] is False
    assert failure_objects(stack) == [key]

    redis_back(monkeypatch, redis_url)
    code, totals, _ = replay(capsys)
    assert (code, totals["replayed"], totals["failed"], totals["marked"]) == (0, EVENTS, 0, 1)
    assert_counted_once(stack, events)


def test_a_poison_record_in_a_replayed_batch_goes_to_the_dead_letter_queue(
    stack, redis_url, monkeypatch, capsys
) -> None:
    events = interactions(4)
    records = on_the_stream(stack, events)
    poison = StreamRecord(records[0].shard_id, str(int(records[-1].sequence_number) + 1), b'{"user_id": "u1"}')
    batch = mapping_batch(stack, [*records, poison])
    redis_down(monkeypatch)
    exhaust_retries(batch, failing=records)  # the poison record needs no Redis to be set aside: it never fails
    given_up(stack, batch)

    redis_back(monkeypatch, redis_url)
    code, totals, _ = replay(capsys)

    assert (code, totals["records"], totals["replayed"], totals["poison"], totals["marked"]) == (0, 5, 4, 1, 1)
    assert_counted_once(stack, events)
    letters = [letter for letter in dead_letters(stack) if letter["sequence_number"] == poison.sequence_number]
    assert len(letters) >= 1 and base64.b64decode(letters[0]["data_base64"]) == poison.data
    assert "item_id" in letters[0]["reason"]


def test_a_dry_run_counts_and_changes_nothing(stack, redis_url, monkeypatch, capsys) -> None:
    first, second = interactions(6, "a"), interactions(4, "b")
    redis_down(monkeypatch)
    sizes = {}
    for events in (first, second):
        batch = mapping_batch(stack, on_the_stream(stack, events))
        exhaust_retries(batch)
        sizes[given_up(stack, batch)] = len(events)
    keys = sorted(sizes)  # the order the tool takes them in
    redis_back(monkeypatch, redis_url)
    before = (redis_state(stack["redis"]), archived_event_ids(stack))

    code, totals, lines = replay(capsys, "--dry-run")
    assert (code, totals["objects"], totals["records"], totals["replayed"], totals["dry_run"]) == (0, 2, 10, 0, True)
    assert [(line["key"], line["records"], line["marked"]) for line in lines] == [(k, sizes[k], False) for k in keys]
    assert (redis_state(stack["redis"]), archived_event_ids(stack), failure_objects(stack)) == (*before, keys)

    code, totals, (line,) = replay(capsys, "--limit", "1")
    assert (code, totals["objects"], totals["marked"], line["key"]) == (0, 1, 1, keys[0])
    assert failure_objects(stack) == sorted([REPLAYED_PREFIX + keys[0], keys[1]])

    code, totals, _ = replay(capsys, "--since", "2999-01-01")  # nothing given up on since then
    assert (code, totals["objects"]) == (0, 0)
    assert replay(capsys)[1]["marked"] == 1
    assert failure_objects(stack) == [REPLAYED_PREFIX + key for key in keys]


def test_a_batch_older_than_the_deduplication_window_is_refused_unless_asked(stack, monkeypatch, capsys) -> None:
    """Past the window, the event claims may have expired: an event the API already applied could count twice, so
    the tool leaves such a batch alone unless the operator passes --beyond-window."""
    window = get_container().settings.deduplication_seconds
    old = [e.model_copy(update={"received_at": time.time() - window - 60}) for e in interactions(4, prefix="old")]
    key = given_up(stack, mapping_batch(stack, on_the_stream(stack, old)))

    code, totals, (line,) = replay(capsys)
    assert code == 1 and totals["replayed"] == 0 and "de-duplication window" in line["error"]
    assert failure_objects(stack) == [key] and buffered_event_ids() == []

    code, totals, _ = replay(capsys, "--beyond-window")
    assert code == 0 and totals["replayed"] == 4
    assert_counted_once(stack, old)
