"""Online-learning routes: status of the buffer and the updates, a manual update, rollback to a checkpoint.

Status is read here. The update and the rollback run in OnlineUpdateFunction, invoked synchronously: an update
works on the model's numpy vectors, and a rollback makes the registry load the version before it becomes champion
(it refuses one that cannot serve), which takes the model code and the numeric layer this function goes without.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recloop.adapters.functions import InvocationTimeoutError, NotInvokedError, invoke
from recloop.container import get_container
from recloop.handlers.errors import ApiError
from recloop.handlers.http.model_registry import MAX_REASON_LENGTH, ChampionChangeOut, registry_errors
from recloop.handlers.http.resolver import documented
from recloop.learning.online.results import OnlineStatus, UpdateResult
from recloop.registry.champion import ChampionPointer
from recloop.registry.versions import VERSION_PATTERN

router = Router()
logger = Logger(child=True)

TAGS = ["online learning"]
PREFIX = "/api/v1/mlops/online-learning"


class TriggerOut(BaseModel):
    status: Literal["ok"]
    result: UpdateResult


class RollbackReply(BaseModel):
    status: Literal["ok"]
    champion: ChampionPointer


class OnlineRollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN.pattern,
        description="a checkpointed version; default: the newest checkpoint that is not the champion",
    )
    reason: str | None = Field(None, min_length=1, max_length=MAX_REASON_LENGTH)


@router.get(
    f"{PREFIX}/status",
    summary="Buffer, updates, checkpoints and the version in service",
    tags=TAGS,
    responses=documented(503),
)
def online_status() -> OnlineStatus:
    learner = get_container().online_learner
    with registry_errors():  # S3 down: 503 (Redis down: 503 from the resolver)
        return learner.status()


@router.post(
    f"{PREFIX}/trigger",
    summary="Run an online update on the buffered events now (waits for its result)",
    tags=TAGS,
    responses=documented(409, 502, 503, 504),
)
def trigger_update() -> TriggerOut:
    reply = _invoke_online_update({"action": "trigger"})
    if reply.get("status") == "running":
        raise ApiError(409, "update_running", "an online update is already running; check the status and retry")
    return _reply_as(TriggerOut, reply)


@router.post(
    f"{PREFIX}/rollback",
    summary="Serve a checkpointed version again (default: the newest checkpoint that is not the champion)",
    tags=TAGS,
    responses=documented(404, 409, 502, 503, 504, reads_body=True),
)
def rollback_online_update(body: Annotated[OnlineRollbackIn | None, Body()] = None) -> ChampionChangeOut:
    request = body or OnlineRollbackIn()
    reply = _invoke_online_update({"action": "rollback", **request.model_dump(exclude_none=True)})
    if reply.get("status") == "refused" and isinstance(reply.get("status_code"), int):
        error = str(reply.get("error", "refused"))
        extra = {"version": reply["version"]} if reply.get("version") else {}
        raise ApiError(reply["status_code"], error, str(reply.get("message", error)), **extra)
    pointer = _reply_as(RollbackReply, reply).champion
    return ChampionChangeOut(status="rolled_back", champion=pointer)


def _reply_as[T: BaseModel](model: type[T], reply: dict[str, Any]) -> T:
    try:
        return model.model_validate(reply)
    except ValidationError as exc:
        logger.error("unexpected reply from the online-update function", extra={"reply": reply})
        raise ApiError(502, "online_update_failed", "the online-update function gave an unexpected reply") from exc


def _invoke_online_update(event: dict[str, Any]) -> dict[str, Any]:
    """Invoke OnlineUpdateFunction with `event` and return its reply (ApiError when it could not answer)."""
    services = get_container()
    name = services.settings.online_update_function_name
    if not name:
        raise ApiError(503, "online_update_unavailable", "no online-update function is configured")
    try:
        invocation = invoke(services.invoke_client(), name, event)
    except InvocationTimeoutError as exc:
        raise ApiError(
            504,
            "online_update_timeout",
            "the online-update function did not answer in time; it may still be running: check the status",
        ) from exc
    except NotInvokedError as exc:
        logger.exception("online-update function not invoked")
        raise ApiError(503, "online_update_unavailable", "the online-update function could not be invoked") from exc
    reply = invocation.reply
    if invocation.function_error or reply is None:
        # The function's error type, message and stack trace stay in the log.
        logger.error("online update failed", extra={"function_error": invocation.function_error, "reply": reply})
        raise ApiError(502, "online_update_failed", "the online update failed; the online-update function logged why")
    return reply
