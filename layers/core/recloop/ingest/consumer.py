"""The stream consumer's per-record work: archive, apply features once, buffer for online learning.

Every step is keyed by the event id, so a redelivered Kinesis batch, or a client's retry that the event path put
on the stream a second time, changes nothing the second time:
- the batch's archive object (recloop.learning.archive) is named by its records' shard and sequence numbers and
  written only if absent; an event that a retry archives again is read back once (readers keep one copy per id);
- features are applied through the event-id claim (the event path may already have applied them; while it is
  applying them, the consumer waits for its claim to be done or to expire, then applies them itself);
- the online-learning buffer claims the event id in the script that appends the event.
That claim also says which events are new: their number per batch is added to the count of new interactions since
the last retrain (the volume trigger, recloop.retraining).
A record that is not a valid interaction fails alone with its reason.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.adapters.queues import Queue
from recloop.adapters.redis import REDIS_ERRORS
from recloop.core.errors import UnavailableError
from recloop.core.events import Interaction
from recloop.drift.features import event_row
from recloop.drift.window import DriftWindow
from recloop.features.store import ApplyOutcome, FeatureStore
from recloop.learning.archive import BatchRecord, archive_batch
from recloop.learning.online.buffer import OnlineBuffer
from recloop.retraining.status import RetrainStatusStore

logger = Logger(child=True)


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

    @property
    def is_interaction(self) -> bool:
        try:
            return self.interaction is not None
        except PoisonRecordError:
            return False


class StreamConsumer:
    def __init__(
        self,
        store: FeatureStore,
        objects: ObjectStore,
        buffer: OnlineBuffer,
        retrain_status: RetrainStatusStore | None = None,
        drift_window: DriftWindow | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.buffer = buffer
        self.retrain_status = retrain_status
        self.drift_window = drift_window

    def process(self, record: StreamRecord, *, archive: bool = True) -> bool:
        """Archive (unless `archive_many` did), apply and buffer one record; whether its event is new here (False
        for a redelivery or a retry). PoisonRecordError for one to set aside."""
        event = record.interaction
        if archive:
            for failure in self.archive_many([record]).values():
                raise failure
        if self.store.apply_waiting(event) is ApplyOutcome.IN_FLIGHT:
            raise FeaturesInFlightError(f"event {event.event_id} is still being applied elsewhere; retry the record")
        return self.buffer.append_once(event) > 0

    def apply_and_buffer_many(self, records: Sequence[StreamRecord]) -> dict[str, int]:
        """A batch's features applied in one call and its events buffered in one more, rather than a few round trips
        per record. For the records done here, by sequence number: the buffer's sequence (0: buffered before). The
        rest (from the first event still being applied elsewhere, or all when Redis failed) go through `process`
        one by one, in order, so the buffer keeps the stream's order."""
        if not records:
            return {}
        try:
            outcomes = self.store.apply_many([record.interaction for record in records])
            done = list(
                itertools.takewhile(
                    lambda pair: pair[1] is not ApplyOutcome.IN_FLIGHT, zip(records, outcomes, strict=True)
                )
            )
            sequences = self.buffer.append_many([record.interaction for record, _ in done])
        except (*REDIS_ERRORS, UnavailableError) as exc:  # applied or not, each record is then tried alone
            logger.warning("batch apply failed; records processed one by one", extra={"error": repr(exc)})
            return {}
        except Exception:  # a fault of ours: each record alone fails (and is retried) for itself
            logger.exception("batch apply failed; records processed one by one")
            return {}
        return {record.sequence_number: sequence for (record, _), sequence in zip(done, sequences, strict=True)}

    def count_new_interactions(self, count: int) -> None:
        """Add a batch's new events to the count since the last retrain. Never fails the batch: its events are
        claimed already, so a retry would not count them again."""
        if self.retrain_status is None or count <= 0:
            return
        try:
            self.retrain_status.add_new_interactions(count)
        except REDIS_ERRORS as exc:
            logger.warning("new interactions not counted", extra={"count": count, "error": repr(exc)})

    def observe_new_events(self, events: Sequence[Interaction]) -> None:
        """Offer a batch's new events to the drift window: each one's type and its item's categories (read for the
        batch in one call). Never fails the batch, like the count: a retry would not offer them again."""
        if self.drift_window is None or not events:
            return
        try:
            categories = self.store.categories_of(list(dict.fromkeys(event.item_id for event in events)))
            rows = [event_row(event.event_type.value, categories.get(event.item_id, ())) for event in events]
            self.drift_window.observe_events(rows)
        except REDIS_ERRORS as exc:
            logger.warning(
                "new events not offered to the drift window", extra={"count": len(events), "error": repr(exc)}
            )

    def archive_many(self, records: Sequence[StreamRecord]) -> dict[str, Exception]:
        """Archive a batch's records, one object per day of their events (recloop.learning.archive); returns the
        failures by sequence number: every record of an object not written, so no record counts as processed
        before it is archived. Records that are not interactions are left to `process`."""
        archived = []
        for record in records:
            try:
                archived.append(BatchRecord(record.shard_id, record.sequence_number, record.interaction))
            except PoisonRecordError:
                continue
        return archive_batch(self.objects, archived)

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
