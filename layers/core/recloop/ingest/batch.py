"""A batch of stream records through the consumer: what the stream function runs for every Kinesis batch, and what
the replay tool runs for every batch the event source mapping gave up on, so both take the same idempotent path.

A poison record is set aside in the dead letters with its reason and counts as done (it must never block the
shard); a record that failed for a passing reason (Redis or S3 unreachable) is reported with its error, for a retry.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recloop.core.events import Interaction
from recloop.ingest.consumer import DeadLetters, PoisonRecordError, StreamConsumer, StreamRecord


@dataclass
class BatchOutcome:
    processed: list[StreamRecord] = field(default_factory=list)
    poison: list[StreamRecord] = field(default_factory=list)
    # By sequence number, in the batch's order: the records to retry.
    failed: dict[str, Exception] = field(default_factory=dict)


def stream_record(raw: Mapping[str, Any]) -> StreamRecord:
    """A record of a Kinesis event as Lambda delivers it (eventID "<shard id>:<sequence number>", base64 data)."""
    kinesis = raw["kinesis"]
    return StreamRecord(
        shard_id=raw["eventID"].split(":", 1)[0],
        sequence_number=kinesis["sequenceNumber"],
        data=_decoded(kinesis["data"]),
    )


def process_records(
    records: Sequence[StreamRecord], consumer: StreamConsumer, dead_letters: DeadLetters
) -> BatchOutcome:
    """Archive, apply and buffer each record once; see the module's docstring for poison and failed records.
    The events new here (not a redelivery's or a retry's) are counted and offered to the drift window once."""
    archive_failures = consumer.archive_many(records)
    done = consumer.apply_and_buffer_many(
        [r for r in records if r.sequence_number not in archive_failures and r.is_interaction]
    )
    outcome = BatchOutcome()
    new_events: list[Interaction] = []
    for record in records:
        try:
            if record.sequence_number in archive_failures:
                raise archive_failures[record.sequence_number]
            if record.sequence_number in done:
                is_new = done[record.sequence_number] > 0
            else:
                is_new = consumer.process(record, archive=False)
            if is_new:
                new_events.append(record.interaction)
        except PoisonRecordError as exc:
            try:
                dead_letters.send(record, str(exc))
            except Exception as send_error:  # the queue is unreachable: retry rather than lose the record
                outcome.failed[record.sequence_number] = send_error
            else:
                outcome.poison.append(record)
        except Exception as exc:  # a passing reason (or a bug): the record is retried, never dropped
            outcome.failed[record.sequence_number] = exc
        else:
            outcome.processed.append(record)
    consumer.count_new_interactions(len(new_events))  # one call per batch
    consumer.observe_new_events(new_events)  # one call per batch
    return outcome


def _decoded(data: str) -> bytes:
    """The record's bytes; undecodable data is kept as is, to be set aside as not an interaction."""
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return data.encode()
