"""The on-failure record Lambda writes when a Kinesis event source mapping discards a batch, parsed into the stream
records the consumer takes: the S3 form (payload as an escaped JSON string, as documented), the object form some
emulators write, and the metadata-only form SQS and SNS destinations get."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from recloop.ingest.consumer import StreamRecord
from recloop.ingest.replay import FailedBatch

SHARD = "shardId-000000000003"
FIRST = "49601189658422359378836298521827638475320189012309704722"
LAST = "49601189658422359378836298522902373528957594348623495186"
STREAM_ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/recloop-interactions"


def kinesis_record(sequence_number: str, data: str) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-1",
            "sequenceNumber": sequence_number,
            "data": data,
            "approximateArrivalTimestamp": 1764000000.123,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/online-update",
        "awsRegion": "eu-west-1",
        "eventSourceARN": STREAM_ARN,
    }


EVENT = {
    "Records": [
        kinesis_record(FIRST, base64.b64encode(b'{"event_id": "e1"}').decode()),
        kinesis_record(LAST, "not base64 at all!"),
    ]
}


def failure_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-4b3e-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:online-update",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 6,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-30T08:15:02.021Z",
        "KinesisBatchInfo": {
            "shardId": SHARD,
            "startSequenceNumber": FIRST,
            "endSequenceNumber": LAST,
            "approximateArrivalOfFirstRecord": "2026-11-30T08:14:58.835Z",
            "approximateArrivalOfLastRecord": "2026-11-30T08:14:59.580Z",
            "batchSize": 2,
            "streamArn": STREAM_ARN,
        },
        "payload": json.dumps(EVENT),
    }
    record.update(overrides)
    return record


EXPECTED_RECORDS = [
    StreamRecord(SHARD, FIRST, b'{"event_id": "e1"}'),
    StreamRecord(SHARD, LAST, b"not base64 at all!"),  # kept as it is: the consumer sets it aside as poison
]


def test_the_s3_form_carries_the_batch_as_an_escaped_json_string() -> None:
    batch = FailedBatch.parse(json.dumps(failure_record()).encode())

    assert batch.timestamp == datetime(2026, 11, 30, 8, 15, 2, 21000, tzinfo=UTC)
    assert batch.request_context.condition == "RetryAttemptsExhausted"
    assert batch.request_context.approximate_invoke_count == 6
    info = batch.batch
    assert (info.shard_id, info.start_sequence_number, info.end_sequence_number) == (SHARD, FIRST, LAST)
    assert (info.batch_size, info.stream_arn) == (2, STREAM_ARN)
    assert batch.payload is not None
    assert [record.stream_record() for record in batch.payload.records] == EXPECTED_RECORDS


def test_a_payload_written_as_an_object_is_read_the_same() -> None:
    batch = FailedBatch.parse(json.dumps(failure_record(payload=EVENT)).encode())
    assert batch.payload is not None
    assert [record.stream_record() for record in batch.payload.records] == EXPECTED_RECORDS


def test_the_metadata_only_form_has_no_payload() -> None:
    record = failure_record()
    del record["payload"]
    batch = FailedBatch.parse(json.dumps(record).encode())
    assert batch.payload is None
    assert (batch.batch.start_sequence_number, batch.batch.batch_size) == (FIRST, 2)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"KinesisBatchInfo": None}, "KinesisBatchInfo"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"payload": json.dumps({"Records": [{"eventID": SHARD + ":1"}]})}, "payload.Records.0.kinesis"),
        ({"payload": "{not json"}, "payload"),
    ],
)
def test_anything_else_is_refused_naming_the_field(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match="not an on-failure record") as refused:
        FailedBatch.parse(json.dumps(failure_record(**change)).encode())
    assert named in str(refused.value)


def test_a_document_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not an on-failure record"):
        FailedBatch.parse(b"<Error>AccessDenied</Error>")
