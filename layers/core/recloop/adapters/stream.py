"""The interaction stream (Kinesis): events in, partitioned by user so each user's events stay in order; a stored
range of one shard read back (replaying batches the consumer gave up on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger

from recloop.core.errors import UnavailableError
from recloop.core.events import Interaction

logger = Logger(child=True)

KINESIS_BATCH_LIMIT = 500
# Records per GetRecords call when reading a stored range back (10,000 is the API's maximum).
READ_PAGE_LIMIT = 1000


class StreamUnavailableError(UnavailableError):
    """The event stream could not take the events; nothing was written."""

    code = "stream_unavailable"


class KinesisEventStream:
    def __init__(self, kinesis_client: Any, stream_name: str) -> None:
        self.client = kinesis_client
        self.stream_name = stream_name

    def put(self, events: Sequence[Interaction]) -> list[str | None]:
        """Write events; one entry per event: None when stored, else the reason it was not.
        Raises StreamUnavailableError when the stream took none of them for want of an answer."""
        outcome: list[str | None] = []
        try:
            for start in range(0, len(events), KINESIS_BATCH_LIMIT):
                chunk = events[start : start + KINESIS_BATCH_LIMIT]
                response = self.client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": e.to_record(), "PartitionKey": e.user_id} for e in chunk],
                )
                for record in response["Records"]:
                    error = record.get("ErrorCode")
                    outcome.append(f"{error}: {record.get('ErrorMessage', '')}".strip() if error else None)
        except Exception as exc:  # botocore raises many types; all mean the stream is unavailable
            logger.warning("event stream unavailable", extra={"error": repr(exc)})
            if not outcome:
                raise StreamUnavailableError(str(exc)) from exc
            outcome.extend(["stream unavailable"] * (len(events) - len(outcome)))
        return outcome

    def records_between(self, shard_id: str, first_sequence: str, last_sequence: str) -> list[tuple[str, bytes]]:
        """(sequence number, data) of one shard's records from `first_sequence` through `last_sequence`, read back
        from the stream (GetShardIterator AT_SEQUENCE_NUMBER): as many of them as it still holds."""
        iterator = self.client.get_shard_iterator(
            StreamName=self.stream_name,
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=first_sequence,
        )["ShardIterator"]
        last = int(last_sequence)
        found: list[tuple[str, bytes]] = []
        while iterator:
            page = self.client.get_records(ShardIterator=iterator, Limit=READ_PAGE_LIMIT)
            for record in page["Records"]:
                if int(record["SequenceNumber"]) > last:
                    return found
                found.append((record["SequenceNumber"], record["Data"]))
            # An empty page is no end while the iterator is behind the tip (Kinesis skips over empty stretches).
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
        return found

    def probe(self) -> None:
        """Raise unless the stream answers (health checks)."""
        self.client.describe_stream_summary(StreamName=self.stream_name)
