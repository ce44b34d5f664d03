"""OnlineUpdateFunction: consume the interaction stream, and update the champion when the buffer is full.

Invocations:

- a Kinesis batch from the event source mapping: every record is archived, applied and buffered once
  (`recloop.stream`; a poison record goes to the dead-letter queue, a record that failed for a passing reason
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

from typing import Annotated, Any, Literal

import redis
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from recloop.online import CheckpointNotFoundError, UpdateResult, UpdateRunningError
from recloop.registry import VERSION_PATTERN, ConcurrentPromotionError, CorruptModelError, ModelNotFoundError
from recloop.services import get_services
from recloop.stream import process_kinesis_batch

logger = Logger(service="recloop-online-update")

# Failures that a retry can get past: the whole batch is retried (every record is idempotent).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ClientError, BotoCoreError)
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
    services = get_services()
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
    except TRANSIENT_ERRORS:
        logger.exception("online update failed for a passing reason; the batch is retried")
        raise
    except Exception:
        logger.exception("online update failed; the batch is kept as processed (the buffer keeps the events)")
    return response


def trigger() -> dict[str, Any]:
    try:
        result: UpdateResult = get_services().online_learner.update()
    except UpdateRunningError:
        return {"status": "running"}
    return {"status": "ok", "result": result.model_dump(mode="json")}


def rollback(request: RollbackRequest) -> dict[str, Any]:
    try:
        pointer = get_services().online_learner.rollback(request.version)
    except CheckpointNotFoundError as exc:
        if request.version is None:
            return _refused("no_previous_checkpoint", "no checkpoint other than the champion to roll back to")
        return _refused("checkpoint_not_found", str(exc), version=request.version)
    except ModelNotFoundError as exc:
        return _refused("model_not_found", str(exc), version=exc.version)
    except CorruptModelError as exc:
        return _refused("model_not_servable", f"refused, the champion is unchanged: {exc}", version=request.version)
    except ConcurrentPromotionError as exc:
        return _refused("concurrent_change", f"{exc}; read the champion and retry")
    logger.info(
        "online learning rollback",
        extra={"version": pointer.version, "from": pointer.previous_version, "reason": request.reason or ""},
    )
    return {"status": "ok", "champion": pointer.model_dump(mode="json")}


def _refused(error: str, message: str, **extra: Any) -> dict[str, Any]:
    logger.info("online learning request refused", extra={"error": error, "reason_given": message})
    return {"status": "refused", "error": error, "message": message, **extra}


def _time_left(context: Any) -> bool:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is None or remaining() >= MIN_REMAINING_MS_FOR_UPDATE
