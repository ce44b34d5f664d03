"""OnlineUpdateFunction: consume the interaction stream, and update the champion when the buffer is full.

Invocations:

- a Kinesis batch from the event source mapping: every record is archived, applied and buffered once
  (`recloop.ingest.batch`; a poison record goes to the dead-letter queue, a record that failed for a passing reason
  is reported for retry, and a batch the mapping gives up on goes to the failed-records bucket, for
  `python -m recloop.tools.replay_failed`), then, if no record failed, while the buffer holds
  ONLINE_LEARNING_BUFFER_SIZE events, an online update runs. An update that fails for a passing reason (Redis, S3
  or the network) fails the invocation, so the mapping retries the batch: its records change nothing the second
  time and the buffer still holds the events.
  Any other update failure is logged and the batch succeeds: a bug must never block the shard.
- `{"action": "trigger"}` (the ops API's manual trigger): one update on whatever the buffer holds.
- `{"action": "rollback", "version": optional, "reason": optional}` (the ops API's rollback): a checkpointed
  version becomes the champion again. It runs here because the registry loads a version before making it the
  champion (it refuses one that cannot serve), which takes the model code and the numeric layer this function has.
  A refusal is a reply (`{"status": "refused", "error": ..., "message": ...}`), not a function error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from recloop.adapters.aws import aws_errors
from recloop.adapters.redis import REDIS_ERRORS
from recloop.container import get_container
from recloop.core.errors import RecLoopError
from recloop.handlers.errors import refusal
from recloop.ingest.batch import process_records, stream_record
from recloop.ingest.consumer import DeadLetters, StreamConsumer
from recloop.learning.online.errors import UpdateRunningError
from recloop.learning.online.results import UpdateResult
from recloop.ops import cloudwatch
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
        # The retry comes first: whatever failed the records (Redis, S3) would fail the update too, turning this
        # partial response into a function error, and the records' retries into bisected single-record batches.
        return response
    learner = services.online_learner
    try:
        for _ in range(MAX_UPDATES_PER_BATCH):
            if not learner.buffer_full() or not _time_left(context):
                break
            cloudwatch.record_online_update(learner.update())
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
    cloudwatch.record_online_update(result)
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
    cloudwatch.record_manual_rollback()
    logger.info(
        "online learning rollback",
        extra={"version": pointer.version, "from": pointer.previous_version, "reason": request.reason or ""},
    )
    return {"status": "ok", "champion": pointer.model_dump(mode="json")}


def _time_left(context: Any) -> bool:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is None or remaining() >= MIN_REMAINING_MS_FOR_UPDATE


def process_kinesis_batch(event: dict[str, Any], consumer: StreamConsumer, dead_letters: DeadLetters) -> dict:
    """A Kinesis batch with partial failures (`recloop.ingest.batch`): a poison record is set aside (never blocking
    the shard); a record that fails for a passing reason (Redis or S3 down) is reported for retry."""
    outcome = process_records([stream_record(raw) for raw in event.get("Records", [])], consumer, dead_letters)
    if outcome.failed:
        first, error = next(iter(outcome.failed.items()))
        logger.warning("records failed", extra={"failed": len(outcome.failed), "first": first, "error": repr(error)})
    # Every failed record is reported: the mapping retries from the lowest one.
    return {"batchItemFailures": [{"itemIdentifier": sequence_number} for sequence_number in outcome.failed]}
