"""The stream consumer's per-record work: archive, apply features once, buffer for online learning.

Every step is keyed by the event id, so a redelivered Kinesis batch, or a client's retry that the event path put
on the stream a second time, changes nothing the second time:
- the archive key is derived from the event id, written only if absent;
- features are applied through the event-id claim (the event path may already have applied them; while it is
  applying them, the consumer waits for its claim to be done or to expire, then applies them itself);
- the online-learning buffer claims the event id in the script that appends the event.
That claim also says which events are new: their number per batch is added to the count of new interactions since
the last retrain (the volume trigger, recloop.retraining).
A record that is not a valid interaction fails alone with its reason.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.adapters.queues import Queue
from recloop.adapters.redis import REDIS_ERRORS
from recloop.core.errors import UnavailableError
from recloop.core.events import Interaction
from recloop.features.store import ApplyOutcome, FeatureStore
from recloop.learning.online.buffer import OnlineBuffer
from recloop.retraining.status import RetrainStatusStore

logger = Logger(child=True)

ARCHIVE_PREFIX = "events/"
# Concurrent archive writes per batch: botocore's default connection pool holds 10.
ARCHIVE_CONCURRENCY = 10


class FeaturesInFlightError(UnavailableError):
    """Another applier held the event's claim past the wait (it should expire by then): the record is retried."""


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


def archive_key(event: Interaction) -> str:
    day = datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%d")
    return f"{ARCHIVE_PREFIX}dt={day}/{event.event_id}.jsonl"


class StreamConsumer:
    def __init__(
        self,
        store: FeatureStore,
        objects: ObjectStore,
        buffer: OnlineBuffer,
        retrain_status: RetrainStatusStore | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.buffer = buffer
        self.retrain_status = retrain_status

    def process(self, record: StreamRecord, *, archive: bool = True) -> bool:
        """Archive (unless `archive_many` did), apply and buffer one record; whether its event is new here (False
        for a redelivery or a retry). PoisonRecordError for one to set aside."""
        event = record.interaction
        if archive:
            self._archive(record, event)
        if self.store.apply_waiting(event) is ApplyOutcome.IN_FLIGHT:
            raise FeaturesInFlightError(f"event {event.event_id} is still being applied elsewhere; retry the record")
        return self.buffer.append_once(event) > 0

    def count_new_interactions(self, count: int) -> None:
        """Add a batch's new events to the count since the last retrain. Never fails the batch: its events are
        claimed already, so a retry would not count them again."""
        if self.retrain_status is None or count <= 0:
            return
        try:
            self.retrain_status.add_new_interactions(count)
        except REDIS_ERRORS as exc:
            logger.warning("new interactions not counted", extra={"count": count, "error": repr(exc)})

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
        key = archive_key(event)
        # Already archived (a redelivery) is success; anything else fails the record for retry.
        self.objects.put_if_absent(key, event.to_record() + b"\n", "application/x-ndjson")

    def buffer_size(self) -> int:
        return self.buffer.size()


class DeadLetters:
    """Records set aside for good (the on-failure queue), each with the reason it could not be processed."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def send(self, record: StreamRecord, reason: str) -> None:
        self.queue.send(
            {
                "reason": reason,
                "shard_id": record.shard_id,
                "sequence_number": record.sequence_number,
                "data_base64": base64.b64encode(record.data).decode(),
            }
        )
