"""The state machines' Lambda tasks (statemachines/*.asl.json): one function, the task named in its input.

The drift check: `check_drift` -> `decide_retrain` -> `start_retrain`. The retrain: `begin_retrain` -> (TrainFunction:
`prepare_dataset`, `train`; or, for a large dataset, `build_training_job` -> SageMaker -> `collect_training_job`)
-> `gate` -> `register` -> `promote_or_canary` -> `finish_retrain`, and `fail_retrain` from every Catch. Each task is
idempotent: Step Functions retries one that failed transiently.

Errors reach Step Functions by their class name. A dependency that did not answer (Redis, S3, a throttled API)
becomes `TransientStepError`, which every Task retries with backoff; any other error is the run's failure, caught by
the state machine, recorded in the retrain status, and shown in the execution's history under its own name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from recloop.adapters.aws import aws_errors
from recloop.adapters.redis import REDIS_ERRORS
from recloop.container import get_container
from recloop.core.errors import UnavailableError
from recloop.models.bundle import ModelKind
from recloop.ops import cloudwatch
from recloop.retraining.model import RetrainTrigger
from recloop.retraining.training_jobs import TrainingJob, TrainingJobResult
from recloop.retraining.workflow import Candidate, Dataset, gate

logger = Logger(service="recloop-workflow")


class TransientStepError(Exception):
    """A dependency did not answer: the state machine retries the step."""


@contextmanager
def transient_errors() -> Iterator[None]:
    try:
        yield
    except (UnavailableError, *REDIS_ERRORS, *aws_errors()) as exc:
        raise TransientStepError(f"{type(exc).__name__}: {exc}") from exc


class RunInput(BaseModel):
    """What every retrain task is given: the execution it belongs to (from the state machine's context)."""

    model_config = ConfigDict(extra="ignore")

    execution_name: str


class BeginInput(RunInput):
    execution_arn: str | None = None
    trigger: RetrainTrigger = RetrainTrigger.MANUAL
    reason: str = "started directly"


class CandidateInput(RunInput):
    candidate: Candidate


class BuildTrainingJobInput(RunInput):
    dataset: Dataset
    kind: ModelKind = ModelKind.LGBM


class CollectTrainingJobInput(RunInput):
    training_job: TrainingJob
    job: TrainingJobResult  # createTrainingJob.sync's result


class FailureInput(RunInput):
    error: dict[str, Any] = {}  # the Catch's {"Error": ..., "Cause": ...}


class StartInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    trigger: RetrainTrigger
    reason: str


def check_drift(event: dict[str, Any]) -> dict[str, Any]:
    from recloop.core.errors import NotFoundError

    try:
        report = get_container().drift.check()
    except NotFoundError as exc:  # no champion, or no reference to compare with: nothing to check yet
        return {"checked": False, "reason": str(exc)}
    cloudwatch.record_drift(report)
    return {
        "checked": True,
        "run_id": report.run_id,
        "model_version": report.model_version,
        "drifted": report.drifted,
        "drift_score": report.drift_score,
        "drifted_features": report.drifted_features,
    }


def decide_retrain(event: dict[str, Any]) -> dict[str, Any]:
    decision = get_container().retraining.evaluate(datetime.now(UTC))
    trigger = decision.trigger.value if decision.trigger else None
    return {"triggered": decision.triggered, "trigger": trigger, "reason": decision.reason}


def start_retrain(event: dict[str, Any]) -> dict[str, Any]:
    request = StartInput.model_validate(event)
    result = get_container().retraining.start(request.trigger, request.reason)
    return {"triggered": result.triggered, "execution_name": result.execution_name, "reason": result.reason}


def begin_retrain(event: dict[str, Any]) -> dict[str, Any]:
    request = BeginInput.model_validate(event)
    run = get_container().retraining.record_started(
        request.execution_name, request.trigger, request.reason, request.execution_arn
    )
    cloudwatch.record_retrain(run)
    return run.model_dump(mode="json")


def build_training_job(event: dict[str, Any]) -> dict[str, Any]:
    request = BuildTrainingJobInput.model_validate(event)
    job = get_container().sagemaker_training.build(request.execution_name, request.dataset, request.kind)
    return job.model_dump(mode="json")


def collect_training_job(event: dict[str, Any]) -> dict[str, Any]:
    request = CollectTrainingJobInput.model_validate(event)
    candidate = get_container().sagemaker_training.collect(request.execution_name, request.training_job, request.job)
    return candidate.model_dump(mode="json")


def gate_candidate(event: dict[str, Any]) -> dict[str, Any]:
    request = CandidateInput.model_validate(event)
    return gate(request.candidate, get_container().settings.retrain_min_improvement).model_dump(mode="json")


def register_candidate(event: dict[str, Any]) -> dict[str, Any]:
    request = CandidateInput.model_validate(event)
    return {"version": get_container().retrain_workflow.register(request.candidate)}


def promote_or_canary(event: dict[str, Any]) -> dict[str, Any]:
    request = CandidateInput.model_validate(event)
    deployed = get_container().retrain_workflow.promote_or_canary(request.candidate, request.execution_name)
    return deployed.model_dump(mode="json")


def finish_retrain(event: dict[str, Any]) -> dict[str, Any]:
    request = RunInput.model_validate(event)
    run = get_container().retraining.record_finished(request.execution_name)
    cloudwatch.record_retrain(run)
    return run.model_dump(mode="json")


def fail_retrain(event: dict[str, Any]) -> dict[str, Any]:
    request = FailureInput.model_validate(event)
    error = request.error.get("Error", "Failed")
    cause = str(request.error.get("Cause", ""))
    run = get_container().retraining.record_failed(request.execution_name, f"{error}: {cause}")
    cloudwatch.record_retrain(run)
    return run.model_dump(mode="json")


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "check_drift": check_drift,
    "decide_retrain": decide_retrain,
    "start_retrain": start_retrain,
    "begin_retrain": begin_retrain,
    "build_training_job": build_training_job,
    "collect_training_job": collect_training_job,
    "gate": gate_candidate,
    "register": register_candidate,
    "promote_or_canary": promote_or_canary,
    "finish_retrain": finish_retrain,
    "fail_retrain": fail_retrain,
}


class UnknownTaskError(ValueError):
    pass


@logger.inject_lambda_context
def handle_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_task(TASKS, event)


def run_task(tasks: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], event: dict[str, Any]) -> dict[str, Any]:
    """The task `event` names, among `tasks`, with transient failures raised as TransientStepError."""
    name = (event or {}).get("task")
    task = tasks.get(str(name))
    if task is None:
        raise UnknownTaskError(f"unknown task {name!r}; one of {sorted(tasks)}")
    logger.append_keys(task=name, execution_name=event.get("execution_name"))
    with transient_errors():
        result = task(event)
    logger.info("task done", extra={"result": result})
    return result
