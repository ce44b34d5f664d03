"""Event ingestion: the stream first, then the real-time features.

Order matters for durability. An event is written to Kinesis before any feature is touched: if the
stream refuses it, the client gets 503 and nothing was written anywhere, so a retry is clean. Once
the stream holds it, the event is durable; the features are then updated at once. Should Redis
fail after the stream accepted the event, the answer says ``features_updated: false`` and the
stream consumer applies the same event later: the store's update is all-or-nothing and its claim
on the event id only "pending" until then (recloop.features.store). Feature updates claim the
event id first, so an event applied twice (by this path and by the consumer, or by a client
retry) counts once. Then an event about a recommended item is credited to the experiment that showed it
(recloop.experiments.attribution), once per event id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools import Logger

from recloop.adapters.redis import REDIS_ERRORS
from recloop.adapters.stream import StreamUnavailableError
from recloop.core.errors import UnavailableError
from recloop.core.events import Interaction
from recloop.features.store import ApplyOutcome, FeatureStore

if TYPE_CHECKING:
    from recloop.experiments.attribution import Attribution, Credit

logger = Logger(child=True)


class EventStream(Protocol):
    def put(self, events: Sequence[Interaction]) -> list[str | None]:
        """Write events; one entry per event: None when stored, else the reason it was not."""
        ...


@dataclass(frozen=True)
class IngestResult:
    event: Interaction
    error: str | None = None  # set when the event was not accepted
    features_updated: bool = False
    duplicate: bool = False
    credit: Credit | None = None  # the experiment variant this event was credited to, if any

    @property
    def accepted(self) -> bool:
        return self.error is None


class IngestService:
    def __init__(self, store: FeatureStore, stream: EventStream, attribution: Attribution | None = None) -> None:
        self.store = store
        self.stream = stream
        self.attribution = attribution

    def ingest(self, events: Sequence[Interaction]) -> list[IngestResult]:
        """Stream, then features. Raises StreamUnavailableError if the stream took none of them."""
        errors = self.stream.put(events)
        if events and all(errors):
            raise StreamUnavailableError(errors[0] or "stream refused every event")
        stored = [event for event, error in zip(events, errors, strict=True) if error is None]
        try:
            outcomes = dict(zip((e.event_id for e in stored), self.store.apply_many(stored), strict=True))
        except (*REDIS_ERRORS, UnavailableError) as exc:
            # Nothing of the batch was applied; its claims expire and the stream consumer applies every event.
            logger.warning("feature update deferred to the stream consumer", extra={"error": repr(exc)})
            outcomes = {}
        except Exception:
            # A fault of ours; but the events are durable on the stream, so the answer must still say accepted
            # (a client told otherwise would retry them). The consumer applies them, or sets them aside.
            logger.exception("feature update failed; deferred to the stream consumer")
            outcomes = {}
        credits: dict[str, Credit] = {}
        if self.attribution is not None and stored and outcomes:
            # Duplicates too: a retry of an event whose attribution failed credits it then (the counters claim the
            # event id, so a repeat changes nothing). Not when Redis just failed: another timeout would only add up.
            credits = {credit.event_id: credit for credit in self.attribution.attribute(stored)}
        results = []
        for event, error in zip(events, errors, strict=True):
            outcome = outcomes.get(event.event_id) if error is None else None
            results.append(
                IngestResult(
                    event=event,
                    error=error,
                    # In flight: another request holds the event's claim; if it fails, the consumer applies it.
                    features_updated=outcome in (ApplyOutcome.APPLIED, ApplyOutcome.DUPLICATE),
                    duplicate=outcome is ApplyOutcome.DUPLICATE,
                    credit=credits.get(event.event_id),
                )
            )
        return results


def received_now() -> float:
    return round(time.time(), 3)
