"""OnlineUpdateFunction: consume the interaction stream, and update the champion when the buffer is full.

Invocations:

- a Kinesis batch from the event source mapping: every record is archived, applied and buffered once
  (`recloop.ingest.consumer`; a poison record goes to the dead-letter queue, a record that failed for a passing reason
  is reported for retry), then, while the buffer holds ONLINE_LEARNING_BUFFER_SIZE events, an online update
  runs. An update that fails for a passing reason (Redis, S3 or the network) fails the invocation, so the
  mapping retries the batch: its records change nothing the second time and the buffer still holds the events.
  Any other update failure is logged and the batch succeeds: a bug must never block the shard.
- `{"action": "trigger"}` (the ops API's manual trigger): one update on whatever the buffer holds.
- `{"action": "rollback", "version": optional, "reason": optional}` (the ops API's rollback): a checkpointed
  version becomes the champion again. It runs here because the registry loads a version before making it the
  champion (it refuses one that cannot serve), which takes the model code and the numeric layer this function has.
  A refusal is a reply (`{"status": "refused", "error": ..., "message": ...}`), not a function error.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from recloop.adapters.aws import aws_errors
from recloop.adapters.redis import REDIS_ERRORS
from recloop.container import get_container
from recloop.core.errors import RecLoopError
from recloop.handlers.errors import refusal
from recloop.ingest.consumer import DeadLetters, PoisonRecordError, StreamConsumer, StreamRecord
from recloop.learning.online.errors import UpdateRunningError
from recloop.learning.online.results import UpdateResult
from recloop.registry.versions import VERSION_PATTERN

logger = Logger(service="recloop-online-update")

# A backlog (buffer more than full) is caught up by a few updates per batch, never past the function's deadline.
MAX_UPDATES_PER_BATCH = 4
MIN_REMAINING_MS_FOR_UPDATE = 30_000


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["trigger"]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["rollback"]
    version: str | None = Field(None, pattern=VERSION_PATTERN.pattern)
    reason: str | None = None


DIRECT_REQUEST = TypeAdapter(Annotated[TriggerRequest | RollbackRequest, Field(discriminator="action")])


@logger.inject_lambda_context
def handle_online_update(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and "Records" in event:
        return handle_stream_batch(event, context)
    request = DIRECT_REQUEST.validate_python(event or {})
    if isinstance(request, RollbackRequest):
        return rollback(request)
    return trigger()


def handle_stream_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    services = get_container()
    response = process_kinesis_batch(event, services.stream_consumer, services.dead_letters)
    failures = response.get("batchItemFailures", [])
    if failures:
        logger.warning("records reported for retry", extra={"failed": len(failures), "records": len(event["Records"])})
    learner = services.online_learner
    try:
        for _ in range(MAX_UPDATES_PER_BATCH):
            if not learner.buffer_full() or not _time_left(context):
                break
            learner.update()
    except UpdateRunningError:
        logger.info("an online update is already running in another invocation")
    except (*REDIS_ERRORS, *aws_errors()):  # a retry can get past these: the batch is retried (records are idempotent)
        logger.exception("online update failed for a passing reason; the batch is retried")
        raise
    except Exception:
        logger.exception("online update failed; the batch is kept as processed (the buffer keeps the events)")
    return response


def trigger() -> dict[str, Any]:
    try:
        result: UpdateResult = get_container().online_learner.update()
    except UpdateRunningError:
        return {"status": "running"}
    return {"status": "ok", "result": result.model_dump(mode="json")}


def rollback(request: RollbackRequest) -> dict[str, Any]:
    try:
        pointer = get_container().online_learner.rollback(request.version)
    except RecLoopError as exc:  # refused: a reply naming the reason, not a function error
        reply = refusal(exc)
        if request.version is not None:
            reply.setdefault("version", request.version)
        logger.info("online learning request refused", extra={"error": reply["error"], "reason_given": str(exc)})
        return reply
    logger.info(
        "online learning rollback",
        extra={"version": pointer.version, "from": pointer.previous_version, "reason": request.reason or ""},
    )
    return {"status": "ok", "champion": pointer.model_dump(mode="json")}


def _time_left(context: Any) -> bool:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is None or remaining() >= MIN_REMAINING_MS_FOR_UPDATE


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
