"""Drift route: the latest drift check's report and the checks before it (recloop.drift checks; the drift-check
state machine runs a check on its schedule)."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from recloop.adapters.aws import aws_errors
from recloop.container import get_container
from recloop.drift.model import DriftReport
from recloop.handlers.errors import ApiError
from recloop.handlers.http.resolver import documented

router = Router()
logger = Logger(child=True)

TAGS = ["drift"]
PATH = "/api/v1/mlops/drift"
HISTORY_LENGTH = 10


class DriftCheckSummary(BaseModel):
    """One check of the history, without its per-feature rows."""

    run_id: str
    checked_at: str = Field(description="ISO 8601, UTC")
    model_version: str
    reference_version: str
    drifted: bool
    drift_score: float
    drifted_features: list[str]

    @classmethod
    def of(cls, report: DriftReport) -> DriftCheckSummary:
        return cls.model_validate(report.model_dump(include=set(cls.model_fields)))


class DriftOut(BaseModel):
    latest: DriftReport | None = Field(
        description="the newest check's report, per feature: test, statistic, p-value, adjusted p-value, effect and "
        "verdict; null before the first check"
    )
    history: list[DriftCheckSummary] = Field(
        description=f"the newest {HISTORY_LENGTH} checks, newest first (the latest among them)"
    )


@router.get(
    PATH,
    summary="The latest drift report and a short history of the checks",
    tags=TAGS,
    responses=documented(503),
)
def drift_reports() -> DriftOut:
    try:
        # The newest reports, newest first: the latest is the first of them (one listing, not two).
        reports = get_container().drift.history(HISTORY_LENGTH)
    except aws_errors() as exc:
        logger.exception("drift reports unreadable")
        raise ApiError(503, "drift_reports_unavailable", "the drift reports could not be read; retry later") from exc
    return DriftOut(latest=reports[0] if reports else None, history=[DriftCheckSummary.of(r) for r in reports])
