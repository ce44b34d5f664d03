"""Experiment routes: create, list, read results, start and stop (recloop.experiments.service does the work)."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from recloop.container import get_container
from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import Decision, ExperimentStatus, Guardrails, Rollout, Variant
from recloop.experiments.service import ExperimentResults, ExperimentService, ExperimentSpec
from recloop.handlers.http.model_registry import registry_errors
from recloop.handlers.http.resolver import documented, json_response

router = Router()

TAGS = ["experiments"]
PREFIX = "/api/v1/mlops/experiments"


class ExperimentCreatedOut(BaseModel):
    experiment_id: str
    status: Literal["draft"]
    message: str


class ExperimentOut(BaseModel):
    """An experiment's definition and lifecycle (its results: GET .../experiments/{experiment_id})."""

    experiment_id: str
    name: str
    description: str
    status: ExperimentStatus
    variants: list[Variant]
    allocation_strategy: AllocationStrategy
    traffic_percentage: float
    epsilon: float
    auto_promote: bool
    rollout_stages: list[float] | None
    guardrails: Guardrails
    created_at: str
    started_at: str | None
    stopped_at: str | None
    decision: Decision | None
    rollout: Rollout | None


class ExperimentsOut(BaseModel):
    count: int
    experiments: list[ExperimentOut] = Field(description="newest first")


class ExperimentStartedOut(BaseModel):
    experiment_id: str
    status: Literal["running"]
    started_at: str | None
    message: str


def get_service() -> ExperimentService:
    return get_container().experiments


@router.post(
    PREFIX,
    summary="Create an experiment between registered model versions (a draft until started)",
    tags=TAGS,
    responses=documented(503, bodies={201: ExperimentCreatedOut}, reads_body=True),
)
def create_experiment(body: ExperimentSpec) -> Any:  # a Response: 201, its body an ExperimentCreatedOut
    with registry_errors():
        experiment = get_service().create(body)
    created = ExperimentCreatedOut(
        experiment_id=experiment.experiment_id,
        status="draft",
        message=f"Experiment '{experiment.name}' created successfully",
    )
    return json_response(201, created.model_dump())


@router.get(PREFIX, summary="Every experiment, newest first", tags=TAGS, responses=documented(503))
def list_experiments() -> ExperimentsOut:
    with registry_errors():
        experiments = get_service().list()
    shown = [ExperimentOut.model_validate(e.model_dump(exclude={"salt", "final_results"})) for e in experiments]
    return ExperimentsOut(count=len(shown), experiments=shown)


@router.get(
    f"{PREFIX}/<experiment_id>",
    summary="An experiment's results; with auto_promote, a decided experiment promotes its winner (or rolls it out "
    "stage by stage) and concludes",
    tags=TAGS,
    responses=documented(404, 503),
)
def get_experiment(experiment_id: str) -> ExperimentResults:
    with registry_errors():
        return get_service().conclude_if_decided(experiment_id)


@router.post(
    f"{PREFIX}/<experiment_id>/start",
    summary="Start assigning users (one experiment runs at a time)",
    tags=TAGS,
    responses=documented(404, 409, 503),
)
def start_experiment(experiment_id: str) -> ExperimentStartedOut:
    with registry_errors():
        experiment = get_service().start(experiment_id)
    return ExperimentStartedOut(
        experiment_id=experiment.experiment_id,
        status="running",
        started_at=experiment.started_at,
        message=f"Experiment '{experiment.name}' is running",
    )


@router.post(
    f"{PREFIX}/<experiment_id>/stop",
    summary="Stop the experiment: concluded with its winner once decided, else stopped; the final results",
    tags=TAGS,
    responses=documented(404, 503),
)
def stop_experiment(experiment_id: str) -> ExperimentResults:
    with registry_errors():
        return get_service().stop(experiment_id)
