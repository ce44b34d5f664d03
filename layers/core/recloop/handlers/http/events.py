"""Routes that take data in: interaction events (one or a batch) and item metadata."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import ValidationError

from recloop.adapters.stream import StreamUnavailableError
from recloop.container import get_container
from recloop.core.events import Interaction
from recloop.features.store import ItemMetadata
from recloop.handlers.errors import ApiError
from recloop.handlers.http.access import require_acting_for
from recloop.handlers.http.resolver import documented, field_errors, json_response
from recloop.handlers.http.schemas import (
    BatchEventResult,
    ErrorOut,
    EventAccepted,
    EventBatchIn,
    EventBatchOut,
    FieldError,
    InteractionIn,
    ItemsIn,
    ItemsUpserted,
)
from recloop.ingest.producer import received_now
from recloop.ops import cloudwatch

router = Router()
logger = Logger(child=True)

# The stream's own reasons (error codes, messages naming the stream and the account) go to the log only.
NOT_STORED = "the event stream did not accept the event; nothing was recorded, retry later"


def _ingest(events: list[Interaction]):
    try:
        results = get_container().ingest.ingest(events)
    except StreamUnavailableError as exc:
        logger.warning("event stream unavailable", extra={"error": str(exc)})
        raise ApiError(503, "stream_unavailable", NOT_STORED) from exc
    refused = [r.error for r in results if not r.accepted]
    if refused:
        logger.warning("event stream refused events", extra={"count": len(refused), "first_error": refused[0]})
    first_seen = [r for r in results if r.accepted and not r.duplicate]
    cloudwatch.record_events(r.event.event_type for r in first_seen)
    cloudwatch.record_conversions(r.credit for r in first_seen if r.credit is not None)
    return results


@router.post(
    "/api/v1/event",
    summary="Record one interaction",
    tags=["events"],
    responses=documented(503, bodies={202: EventAccepted}, reads_body=True),
)
def post_event(event: InteractionIn) -> Any:
    require_acting_for(router.current_event, [("user_id", event.user_id)])
    (result,) = _ingest([event.to_event(received_now())])
    if not result.accepted:
        raise ApiError(503, "stream_unavailable", NOT_STORED)
    body = EventAccepted(
        event_id=result.event.event_id,
        status="duplicate" if result.duplicate else "accepted",
        features_updated=result.features_updated,
    )
    return json_response(202, body.model_dump())


@router.post(
    "/api/v1/events/batch",
    summary="Record up to 500 interactions",
    tags=["events"],
    responses=documented(
        503,
        # 422: the body itself is invalid (ErrorOut), or every event in it is (EventBatchOut).
        bodies={202: EventBatchOut, 207: EventBatchOut, 422: ErrorOut | EventBatchOut},
        reads_body=True,
    ),
)
def post_events_batch(batch: EventBatchIn) -> Any:
    received_at = received_now()
    results: list[BatchEventResult | None] = [None] * len(batch.events)
    valid: list[tuple[int, Interaction]] = []
    for index, raw in enumerate(batch.events):
        try:
            valid.append((index, InteractionIn.model_validate(raw).to_event(received_at)))
        except ValidationError as exc:
            errors = [FieldError(**e) for e in field_errors(list(exc.errors()))]
            results[index] = BatchEventResult(index=index, status="rejected", errors=errors)
    # One event for a user the caller may not act for refuses the whole batch, before anything is written.
    require_acting_for(router.current_event, [(f"events.{index}.user_id", event.user_id) for index, event in valid])
    if valid:
        for (index, _), outcome in zip(valid, _ingest([event for _, event in valid]), strict=True):
            if outcome.accepted:
                status = "duplicate" if outcome.duplicate else "accepted"
                results[index] = BatchEventResult(
                    index=index,
                    status=status,
                    event_id=outcome.event.event_id,
                    features_updated=outcome.features_updated,
                )
            else:
                errors = [FieldError(field="stream", reason=NOT_STORED)]
                results[index] = BatchEventResult(index=index, status="failed", errors=errors)
    final = [r for r in results if r is not None]
    body = EventBatchOut(
        accepted=sum(1 for r in final if r.status in ("accepted", "duplicate")),
        rejected=sum(1 for r in final if r.status == "rejected"),
        failed=sum(1 for r in final if r.status == "failed"),
        results=final,
    )
    if body.accepted == len(final):
        status_code = 202
    elif body.accepted == 0 and body.failed == 0:
        status_code = 422
    else:
        status_code = 207
    return json_response(status_code, body.model_dump(exclude_none=True))


@router.post(
    "/api/v1/items",
    summary="Create or update item metadata",
    tags=["catalogue"],
    responses=documented(503, reads_body=True),
)
def post_items(body: ItemsIn) -> ItemsUpserted:
    upserted = get_container().store.upsert_items(
        ItemMetadata(item.item_id, tuple(item.categories), item.title) for item in body.items
    )
    return ItemsUpserted(upserted=upserted)
