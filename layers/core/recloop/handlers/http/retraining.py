"""Retraining routes: the status, and a request that starts a retrain (forced) or evaluates the triggers
(recloop.retraining.service does the work)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from recloop.container import get_container
from recloop.handlers.http.model_registry import MAX_REASON_LENGTH
from recloop.handlers.http.resolver import documented
from recloop.retraining.model import RetrainStatus
from recloop.retraining.service import RetrainRequestResult

router = Router()

TAGS = ["retraining"]
PREFIX = "/api/v1/mlops/retrain"


class RetrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: StrictBool = Field(
        False,
        description="true: start a retrain now; false: start one only if a trigger fires (drift, performance, "
        "volume, schedule)",
    )
    reason: str | None = Field(
        None, min_length=1, max_length=MAX_REASON_LENGTH, description="why, for a forced retrain's status and history"
    )


@router.get(
    f"{PREFIX}/status",
    summary="Whether a retrain runs, the last one, the new interactions since, the last drift score and the counts",
    tags=TAGS,
    responses=documented(503),
)
def retrain_status() -> RetrainStatus:
    return get_container().retraining.status()


@router.post(
    PREFIX,
    summary="Start a retrain (force: true; 409 while one runs), or evaluate the triggers and start one if one fires",
    tags=TAGS,
    responses=documented(409, 503, reads_body=True),
)
def request_retrain(body: Annotated[RetrainIn | None, Body()] = None) -> RetrainRequestResult:
    request = body or RetrainIn()
    return get_container().retraining.request(force=request.force, reason=request.reason)
