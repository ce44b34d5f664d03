"""The stream consumer's per-record work: archive, apply features once, buffer for online learning.

Every step is idempotent, so a redelivered Kinesis batch changes nothing the second time:
- the archive key is derived from shard and sequence number, written only if absent;
- features are applied through the event-id claim (the event path may already have applied them);
- the online-learning buffer takes a record only after claiming its sequence number.
A record that is not a valid interaction fails alone with its reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from recloop.features import FeatureStore
from recloop.interactions import Interaction

ARCHIVE_PREFIX = "events/"
BUFFER_KEY = "{olb}:buffer"
BUFFER_SEEN_TTL_SECONDS = 7 * 86_400
# Concurrent archive writes per batch: botocore's default connection pool holds 10.
ARCHIVE_CONCURRENCY = 10
# Claim the sequence number and append in one step (both keys share the {olb} slot: cluster-safe).
BUFFER_ONCE = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[2]) then
  return redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 0
"""


class PoisonRecordError(ValueError):
    """A stream record that can never be processed: it goes to the on-failure destination with this reason."""


@dataclass(frozen=True)
class StreamRecord:
    shard_id: str
    sequence_number: str
    data: bytes

    @cached_property  # archive_many and process both need it: validated once
    def interaction(self) -> Interaction:
        try:
            return Interaction.model_validate_json(self.data)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            raise PoisonRecordError(f"not an interaction ({reasons})") from exc


def archive_key(shard_id: str, sequence_number: str, timestamp: float) -> str:
    day = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return f"{ARCHIVE_PREFIX}dt={day}/{shard_id}-{sequence_number}.jsonl"


class StreamConsumer:
    def __init__(self, store: FeatureStore, s3_client: Any, bucket: str) -> None:
        self.store = store
        self.s3 = s3_client
        self.bucket = bucket
        self._buffer_once = store.redis.register_script(BUFFER_ONCE)

    def process(self, record: StreamRecord, *, archive: bool = True) -> Interaction:
        """Archive (unless `archive_many` did), apply and buffer one record; PoisonRecordError for one to set aside."""
        event = record.interaction
        if archive:
            self._archive(record, event)
        self.store.apply(event)  # a no-op when the event path already applied it
        self._buffer(record, event)
        return event

    def archive_many(self, records: Sequence[StreamRecord]) -> dict[str, Exception]:
        """Archive a batch's records concurrently (one S3 round trip each would dominate the batch's time);
        returns the failures by sequence number. Records that are not interactions are left to `process`."""
        from concurrent.futures import ThreadPoolExecutor

        parsed = []
        for record in records:
            try:
                parsed.append((record, record.interaction))
            except PoisonRecordError:
                continue
        failures: dict[str, Exception] = {}

        def archive(pair: tuple[StreamRecord, Interaction]) -> None:
            try:
                self._archive(*pair)
            except Exception as exc:  # reported per record: the record fails for retry
                failures[pair[0].sequence_number] = exc

        if len(parsed) == 1:
            archive(parsed[0])
        elif parsed:
            with ThreadPoolExecutor(max_workers=min(ARCHIVE_CONCURRENCY, len(parsed))) as pool:
                list(pool.map(archive, parsed))
        return failures

    def _archive(self, record: StreamRecord, event: Interaction) -> None:
        key = archive_key(record.shard_id, record.sequence_number, event.timestamp)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=event.to_record() + b"\n", IfNoneMatch="*")
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise  # anything but "already archived" fails the record for retry

    def _buffer(self, record: StreamRecord, event: Interaction) -> None:
        seen = f"{{olb}}:seen:{record.shard_id}:{record.sequence_number}"
        self._buffer_once(keys=[seen, BUFFER_KEY], args=[event.to_record(), BUFFER_SEEN_TTL_SECONDS])

    def buffer_size(self) -> int:
        return int(self.store.redis.llen(BUFFER_KEY))


class DeadLetters:
    """Records set aside for good (the on-failure queue), each with the reason it could not be processed."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def send(self, record: StreamRecord, reason: str) -> None:
        body = {
            "reason": reason,
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "data_base64": base64.b64encode(record.data).decode(),
        }
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))


def _decoded(data: str) -> bytes:
    """The record's bytes; undecodable data is kept as is, to be set aside as not an interaction."""
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return data.encode()


def process_kinesis_batch(event: dict[str, Any], consumer: StreamConsumer, dead_letters: DeadLetters) -> dict:
    """A Kinesis batch with partial failures: a poison record is set aside (never blocking the shard);
    a record that fails for a passing reason (Redis or S3 down) is reported for retry."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    records = {
        raw["kinesis"]["sequenceNumber"]: StreamRecord(
            shard_id=raw["eventID"].split(":", 1)[0],
            sequence_number=raw["kinesis"]["sequenceNumber"],
            data=_decoded(raw["kinesis"]["data"]),
        )
        for raw in event.get("Records", [])
    }
    archive_failures = consumer.archive_many(list(records.values()))

    def handle(record: Any) -> None:
        stream_record = records[record.kinesis.sequence_number]
        if stream_record.sequence_number in archive_failures:
            raise archive_failures[stream_record.sequence_number]
        try:
            consumer.process(stream_record, archive=False)
        except PoisonRecordError as exc:
            dead_letters.send(stream_record, str(exc))

    # A batch that failed whole is reported item by item too: the mapping retries from the first failure.
    processor = BatchProcessor(event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=handle, processor=processor)
