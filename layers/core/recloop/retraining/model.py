"""The retrain status as the API shows it (the guide's "Auto-Retraining" response fields), and a retrain's run."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class RetrainTrigger(StrEnum):
    """What started a retrain; it names the execution (`retrain-<trigger>-<UTC time>`) and its counter."""

    DRIFT = "drift"
    PERFORMANCE = "performance"
    VOLUME = "volume"
    SCHEDULE = "schedule"
    MANUAL = "manual"


# The status metric each trigger counts in (the guide names the first two).
TRIGGER_METRICS: dict[RetrainTrigger, str] = {
    RetrainTrigger.DRIFT: "drift_triggered_retrains",
    RetrainTrigger.SCHEDULE: "scheduled_retrains",
    RetrainTrigger.VOLUME: "volume_triggered_retrains",
    RetrainTrigger.PERFORMANCE: "performance_triggered_retrains",
    RetrainTrigger.MANUAL: "manual_retrains",
}


class RunOutcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RetrainRun(BaseModel):
    execution_name: str
    execution_arn: str | None = Field(None, description="known once the execution started")
    trigger: RetrainTrigger
    reason: str
    started_at: str = Field(description="ISO 8601, UTC")
    finished_at: str | None = None
    outcome: RunOutcome = RunOutcome.RUNNING
    error: str | None = None


class RetrainMetrics(BaseModel):
    total_retrains: int = 0
    drift_triggered_retrains: int = 0
    scheduled_retrains: int = 0
    volume_triggered_retrains: int = 0
    performance_triggered_retrains: int = 0
    manual_retrains: int = 0
    failed_retrains: int = 0


class ExecutionView(BaseModel):
    """The last run's execution as Step Functions reports it now."""

    execution_arn: str
    status: str = Field(description="RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED")
    current_step: str | None = Field(description="the state it entered last: the one running, or where it ended")
    console_url: str = Field(description="the execution's page in the AWS Step Functions console")


class RetrainStatus(BaseModel):
    retraining_in_progress: bool
    running_execution: str | None = Field(description="the execution that holds the retrain lock")
    last_retrain_time: str | None = Field(description="when the last successful retrain finished (ISO 8601, UTC)")
    new_interactions_since_retrain: int = Field(description="events applied for the first time since then")
    last_drift_score: float | None = Field(description="the drift score of the latest report evaluated")
    counting_since: str | None = Field(
        description="when the triggers were first evaluated: the schedule's start while no retrain has succeeded"
    )
    metrics: RetrainMetrics
    last_run: RetrainRun | None
    execution: ExecutionView | None = Field(None, description="the last run's execution, where Step Functions runs it")
    recent_runs: list[RetrainRun] = Field(default_factory=list, description="the finished runs, newest first")
