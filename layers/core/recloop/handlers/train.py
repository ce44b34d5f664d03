"""TrainFunction: train a candidate on the event archive, compare it with the champion, register, maybe promote."""

from __future__ import annotations

from datetime import date
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from recloop.adapters.objects import ObjectStore
from recloop.container import get_container
from recloop.learning.archive import ARCHIVE_PREFIX, compact_closed_days, prepare_dataset
from recloop.learning.training import train_candidate
from recloop.models.bundle import ModelKind
from recloop.retraining.workflow import Dataset, champion_baseline, plan_holdout

logger = Logger(service="recloop-train")

MIN_TRAINING_EVENTS = 100
# Compaction before a retrain's dataset is read begins no further day after this long (what is left waits for the
# next retrain: the archive reads the same, compacted or not).
COMPACTION_BUDGET_SECONDS = 120
SINCE = Field(None, description="the first day (UTC) of the archive to train on; every day without it")


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ModelKind = ModelKind.LGBM
    events_prefix: str = ARCHIVE_PREFIX
    since: date | None = SINCE
    holdout_fraction: float = Field(0.1, gt=0, le=0.5)
    promote_if_better: bool = True
    min_improvement: float = Field(0.0, ge=0, description="HR@10 the candidate must gain over the champion")
    reason: str = "retrain"


class PrepareDatasetTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    execution_name: str
    events_prefix: str = ARCHIVE_PREFIX
    since: date | None = SINCE


class TrainTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    execution_name: str
    dataset: Dataset
    kind: ModelKind = ModelKind.LGBM


def prepare_dataset_task(event: dict[str, Any]) -> dict[str, Any]:
    request = PrepareDatasetTask.model_validate(event)
    services = get_container()
    compact_archive(services.objects, request.events_prefix)
    events = prepare_dataset(services.objects, request.since, prefix=request.events_prefix)
    return services.retrain_workflow.prepare_dataset(request.execution_name, events).model_dump(mode="json")


def compact_archive(objects: ObjectStore, prefix: str) -> None:
    """Compact the archive's closed days, so this and later reads take a few GETs per day. An optimisation only:
    a failure is logged and the dataset is read all the same (the archive reads the same whatever a run left)."""
    try:
        compacted = compact_closed_days(objects, prefix=prefix, budget_seconds=COMPACTION_BUDGET_SECONDS)
    except Exception:
        logger.exception("archive compaction failed; the dataset is read from the batch objects")
        return
    if compacted:
        logger.info("archive compacted", extra={"days": [day.day for day in compacted]})


def train_task(event: dict[str, Any]) -> dict[str, Any]:
    request = TrainTask.model_validate(event)
    candidate = get_container().retrain_workflow.train(request.execution_name, request.dataset, request.kind)
    return candidate.model_dump(mode="json")


# The retrain state machine's steps this function runs (it has the memory and the time); the others run in the
# workflow function (recloop.handlers.workflow).
TASKS = {"prepare_dataset": prepare_dataset_task, "train": train_task}


@logger.inject_lambda_context
def handle_train(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A retrain step (`task` in the input), or a whole training run invoked directly (TrainRequest)."""
    if event and "task" in event:
        from recloop.handlers.workflow import run_task

        return run_task(TASKS, event)
    return train_directly(event)


def train_directly(event: dict[str, Any]) -> dict[str, Any]:
    from recloop.registry.versions import new_version_id

    request = TrainRequest.model_validate(event or {})
    services = get_container()
    registry = services.registry
    events = prepare_dataset(services.objects, request.since, prefix=request.events_prefix)
    if len(events) < MIN_TRAINING_EVENTS:
        since = f" since {request.since}" if request.since else ""
        raise ValueError(
            f"only {len(events)} archived events under {request.events_prefix}{since}; need {MIN_TRAINING_EVENTS}"
        )
    plan = plan_holdout(registry, events, request.holdout_fraction)
    parent, baseline = champion_baseline(registry, plan.holdout_start)
    result = train_candidate(
        request.kind,
        events,
        services.settings,
        new_version_id(request.kind),
        holdout_fraction=plan.holdout_fraction,
        champion=registry.load(baseline) if baseline else None,
        parent_version=parent,
        categories_of=services.store.categories_of,
    )
    version = result.bundle.metadata.version
    registry.register(result.bundle)
    candidate_hr, champion_hr = result.candidate_hr, result.champion_hr
    better = champion_hr is None or candidate_hr >= champion_hr + request.min_improvement
    promoted = better and request.promote_if_better
    if promoted:
        registry.promote(version, reason=f"{request.reason}: holdout HR@10 {candidate_hr:.4f} vs {champion_hr}")
    outcome = {
        "version": version,
        "kind": request.kind.value,
        "interactions": len(events),
        "candidate": result.candidate_metrics,
        "champion": result.champion_metrics,
        "champion_version": baseline,
        "promoted": promoted,
    }
    logger.info("training finished", extra=outcome)
    return outcome
