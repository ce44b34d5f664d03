"""Replaying the stream batches the event source mapping gave up on.

A batch that still fails after the mapping's MaximumRetryAttempts (Redis down for longer than the retries last) is
discarded from the shard, and Lambda writes its invocation record to the on-failure S3 bucket, under
`aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>`: a JSON document with
`requestContext`, `responseContext`, `version`, `timestamp`, `KinesisBatchInfo` (shard, first and last sequence
number, batch size, stream ARN) and `payload`, the invocation's event (`{"Records": [...]}`) as a JSON string.

Replaying re-drives each record through the stream function's own path (`recloop.ingest.batch.process_records`):
archive written only if absent, features applied once per event id, the online-learning buffer taking each record
once. So records that were partly processed, or a failure object replayed twice, change nothing the second time.
A failure object whose every record is processed (or set aside as poison) is moved under `replayed/`, with the
replay's counts as its metadata (the audit trail); one with a failed record stays for the next run. A record
without a payload is read back from the stream while the stream still holds it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recloop.adapters.objects import ObjectStore
from recloop.adapters.stream import KinesisEventStream
from recloop.core.events import Interaction
from recloop.ingest.batch import process_records, stream_record
from recloop.ingest.consumer import DeadLetters, PoisonRecordError, StreamConsumer, StreamRecord

FAILURES_PREFIX = "aws/lambda/"
REPLAYED_PREFIX = "replayed/"


class KinesisRecordData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    sequence_number: str = Field(alias="sequenceNumber", min_length=1)
    data: str


class KinesisEventRecord(BaseModel):
    """One record of the event Lambda gave the function (only what the consumer reads)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event_id: str = Field(alias="eventID", min_length=1)
    kinesis: KinesisRecordData

    def stream_record(self) -> StreamRecord:
        return stream_record(self.model_dump(by_alias=True))


class KinesisEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    records: list[KinesisEventRecord] = Field(alias="Records")


class KinesisBatchInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    shard_id: str = Field(alias="shardId", min_length=1)
    start_sequence_number: str = Field(alias="startSequenceNumber", min_length=1)
    end_sequence_number: str = Field(alias="endSequenceNumber", min_length=1)
    batch_size: int = Field(alias="batchSize", ge=0)
    stream_arn: str = Field(alias="streamArn")


class FailureContext(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    condition: str = ""
    approximate_invoke_count: int = Field(0, alias="approximateInvokeCount")


class FailedBatch(BaseModel):
    """An on-failure invocation record of a Kinesis event source mapping."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    timestamp: datetime
    request_context: FailureContext = Field(alias="requestContext")
    batch: KinesisBatchInfo = Field(alias="KinesisBatchInfo")
    # Only an S3 destination gets it; SQS and SNS destinations get the metadata alone.
    payload: KinesisEvent | None = None

    @field_validator("payload", mode="before")
    @classmethod
    def _payload_is_a_json_string(cls, value: Any) -> Any:
        # Documented as a JSON string; an object (as some emulators write it) is taken as it is.
        return json.loads(value) if isinstance(value, str | bytes) else value

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @classmethod
    def parse(cls, body: bytes) -> FailedBatch:
        """ValueError naming the field when `body` is no on-failure record of a Kinesis mapping."""
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"not an on-failure record of a Kinesis event source mapping ({reasons})") from None


class UnrecoverableBatchError(RuntimeError):
    """The batch's records cannot be had: no payload, and the stream does not hold them (any more)."""


@dataclass
class ObjectReport:
    """What replaying one failure object did."""

    key: str
    records: int = 0
    replayed: int = 0
    duplicates: int = 0  # records met before in this run (in another failure object): replayed once
    poison: int = 0  # not interactions: set aside in the dead-letter queue with their reason
    failed: int = 0  # failed again: the object stays for the next run
    marked: bool = False
    error: str | None = None


@dataclass
class ReplaySummary:
    objects: int = 0
    records: int = 0
    replayed: int = 0
    duplicates: int = 0
    poison: int = 0
    failed: int = 0
    errors: int = 0  # failure objects that could not be read, or whose records could not be had, or not marked
    marked: int = 0
    dry_run: bool = False
    reports: list[ObjectReport] = field(default_factory=list, repr=False)

    def add(self, report: ObjectReport) -> None:
        self.reports.append(report)
        self.objects += 1
        self.records += report.records
        self.replayed += report.replayed
        self.duplicates += report.duplicates
        self.poison += report.poison
        self.failed += report.failed
        self.errors += report.error is not None
        self.marked += report.marked

    @property
    def complete(self) -> bool:
        """Whether nothing is left for a next run."""
        return not self.failed and not self.errors

    def totals(self) -> dict[str, Any]:
        totals = asdict(self)
        del totals["reports"]
        return totals


class FailedBatchReplayer:
    def __init__(
        self,
        failures: ObjectStore,
        consumer: StreamConsumer,
        dead_letters: DeadLetters,
        stream: KinesisEventStream | None = None,
        *,
        window_seconds: float | None = None,
    ) -> None:
        """`failures`: the on-failure bucket; `stream`: where records without a payload are read back from;
        `window_seconds`: the de-duplication window. A batch with an event received longer ago than that is
        refused (its event claims may have expired, so an event the API already applied could count twice),
        unless `window_seconds` is None (the operator's explicit choice)."""
        self.failures = failures
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.stream = stream
        self.window_seconds = window_seconds

    def replay(
        self,
        prefix: str = FAILURES_PREFIX,
        *,
        since: datetime | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        progress: Callable[[ObjectReport], None] = lambda _: None,
    ) -> ReplaySummary:
        """Replay the failure objects under `prefix` (oldest first within a shard) that Lambda wrote at or after
        `since`, at most `limit` of them; with `dry_run`, only count their records."""
        summary = ReplaySummary(dry_run=dry_run)
        seen: set[tuple[str, str]] = set()
        for key in self._pending(prefix):
            if limit is not None and summary.objects >= limit:
                break
            report = ObjectReport(key)
            try:
                batch = FailedBatch.parse(self._read(key))
            except ValueError as exc:
                report.error = str(exc)
            else:
                if since is not None and batch.timestamp < since:
                    continue
                self._replay_batch(batch, report, seen, dry_run)
            summary.add(report)
            progress(report)
        return summary

    def _pending(self, prefix: str) -> Iterator[str]:
        for key in self.failures.keys(prefix):
            if not key.startswith(REPLAYED_PREFIX):
                yield key

    def _read(self, key: str) -> bytes:
        found = self.failures.get(key)
        if found is None:
            raise ValueError("the object is gone (replayed by a concurrent run?)")
        return found[0]

    def _replay_batch(
        self, batch: FailedBatch, report: ObjectReport, seen: set[tuple[str, str]], dry_run: bool
    ) -> None:
        if dry_run and batch.payload is None:
            report.records = batch.batch.batch_size  # counted without reading the stream
            return
        try:
            records = self._records(batch)
        except UnrecoverableBatchError as exc:
            report.records, report.error = batch.batch.batch_size, str(exc)
            return
        report.records = len(records)
        if self.window_seconds is not None:
            oldest = min((event.received_at for event in _interactions(records)), default=None)
            if oldest is not None and time.time() - oldest > self.window_seconds:
                report.error = (
                    "an event of this batch is older than the de-duplication window: replaying it could count an "
                    "event twice (replay it with --beyond-window if its events are known not to be applied)"
                )
                return
        fresh = []
        for record in records:
            identity = (record.shard_id, record.sequence_number)
            if identity in seen:
                report.duplicates += 1
            else:
                seen.add(identity)
                fresh.append(record)
        if dry_run:
            return
        outcome = process_records(fresh, self.consumer, self.dead_letters)
        report.replayed, report.poison, report.failed = len(outcome.processed), len(outcome.poison), len(outcome.failed)
        if outcome.failed:
            first, error = next(iter(outcome.failed.items()))
            report.error = f"{report.failed} records failed again (first: {first}, {error!r})"
            return
        try:
            self.failures.move(report.key, REPLAYED_PREFIX + report.key, self._audit(report))
        except Exception as exc:  # replayed, but left in place: the next run replays it again, changing nothing
            report.error = f"replayed, but not moved under {REPLAYED_PREFIX}: {exc!r}"
            return
        report.marked = True

    def _records(self, batch: FailedBatch) -> list[StreamRecord]:
        if batch.payload is not None:
            return [record.stream_record() for record in batch.payload.records]
        info = batch.batch
        if self.stream is None:
            raise UnrecoverableBatchError("no payload, and no stream (STREAM_NAME) to read the records back from")
        if info.stream_arn.rsplit("/", 1)[-1] != self.stream.stream_name:
            raise UnrecoverableBatchError(f"no payload, and the batch is of another stream ({info.stream_arn})")
        found = self.stream.records_between(info.shard_id, info.start_sequence_number, info.end_sequence_number)
        sequence_numbers = [sequence_number for sequence_number, _ in found]
        if len(found) != info.batch_size or sequence_numbers[:1] != [info.start_sequence_number]:
            raise UnrecoverableBatchError(
                f"no payload, and the stream holds {len(found)} of the batch's {info.batch_size} records "
                "(past the stream's retention?)"
            )
        return [StreamRecord(info.shard_id, sequence_number, data) for sequence_number, data in found]

    @staticmethod
    def _audit(report: ObjectReport) -> dict[str, str]:
        return {
            "replayed-at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": str(report.records),
            "replayed": str(report.replayed),
            "duplicates": str(report.duplicates),
            "poison": str(report.poison),
        }


def _interactions(records: list[StreamRecord]) -> Iterator[Interaction]:
    """The records' events, leaving out those that are not interactions (set aside as poison when replayed)."""
    for record in records:
        try:
            yield record.interaction
        except PoisonRecordError:
            continue
