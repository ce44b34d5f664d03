"""Retraining as operators and the retrain state machine use it.

    request(force=True)    start a manual retrain (RetrainInProgressError while one runs)
    request(force=False)   evaluate the triggers (recloop.retraining.triggers) and start a retrain if one fires
    record_started/finished/failed   the retrain state machine's first task and its two ends

Starting a retrain takes the lock (owner: the execution's name), names the execution after its trigger and its UTC
second (`retrain-drift-20261201T120000Z`, so the console's list reads as a history; a redelivered trigger finds the
lock held and starts nothing) and asks the launcher to start it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field

from recloop.adapters.aws import aws_errors
from recloop.adapters.workflows import console_url
from recloop.core.errors import ConflictError, UnavailableError
from recloop.core.settings import Settings
from recloop.drift.model import DriftReport
from recloop.drift.reports import DriftReports
from recloop.retraining.launcher import RetrainLauncher
from recloop.retraining.model import ExecutionView, RetrainRun, RetrainStatus, RetrainTrigger, RunOutcome
from recloop.retraining.performance import PerformanceSignal
from recloop.retraining.status import RetrainStatusStore, iso
from recloop.retraining.triggers import Decision, decide

logger = Logger(child=True)

MANUAL_REASON = "Manual trigger"
ARCHIVE_PREFIX = "events/"  # what a retrain trains on: the stream consumer's archive
MAX_ERROR_LENGTH = 1000  # a failed step's error as the status shows it (the execution history keeps all of it)


class RetrainInProgressError(ConflictError):
    code = "retrain_in_progress"

    def __init__(self, execution_name: str | None) -> None:
        super().__init__(
            f"a retrain is already in progress ({execution_name or 'unknown execution'})",
            execution_name=execution_name or "",
        )


class UnknownRetrainRunError(ConflictError):
    """The state machine reported on a run that is not the last one recorded (its lock expired and another began)."""

    code = "retrain_run_unknown"

    def __init__(self, execution_name: str) -> None:
        super().__init__(f"{execution_name!r} is not the last retrain run", execution_name=execution_name)


class DriftReportsUnavailableError(UnavailableError):
    code = "drift_reports_unavailable"


class RetrainRequestResult(BaseModel):
    triggered: bool = Field(description="a retrain was started by this request")
    reason: str
    trigger: RetrainTrigger | None
    execution_name: str | None
    status: RetrainStatus


def execution_name(trigger: RetrainTrigger, now: datetime) -> str:
    return f"retrain-{trigger.value}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class RetrainService:
    def __init__(
        self,
        store: RetrainStatusStore,
        drift_reports: DriftReports,
        performance: PerformanceSignal,
        launcher: RetrainLauncher,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.drift_reports = drift_reports
        self.performance = performance
        self.launcher = launcher
        self.settings = settings
        self.clock = clock

    def status(self) -> RetrainStatus:
        """The status, with the last run's execution as Step Functions reports it (its current step, a link)."""
        status = self.store.read()
        arn = status.last_run.execution_arn if status.last_run else None
        progress = self.launcher.progress(arn) if arn else None
        if arn and progress is not None:
            status.execution = ExecutionView(
                execution_arn=arn,
                status=progress.status,
                current_step=progress.current_step,
                console_url=console_url(arn),
            )
        return status

    def request(self, force: bool, reason: str | None = None) -> RetrainRequestResult:
        now = self.clock()
        if force:
            self.launcher.require_configured()
            decision = Decision(RetrainTrigger.MANUAL, reason or MANUAL_REASON)
        else:
            decision = self.evaluate(now)
            if decision.triggered:
                self.launcher.require_configured()
        return self._start_unless_running(decision, now, force=force)

    def start(self, trigger: RetrainTrigger, reason: str) -> RetrainRequestResult:
        """Start a retrain for a trigger decided already (the drift check's decision); none while one runs."""
        self.launcher.require_configured()
        return self._start_unless_running(Decision(trigger, reason), self.clock(), force=False)

    def _start_unless_running(self, decision: Decision, now: datetime, *, force: bool) -> RetrainRequestResult:
        if decision.trigger is None:
            return self._result(decision, None)
        try:
            run = self._start(decision.trigger, decision.reason, now)
        except RetrainInProgressError as exc:
            if force:
                raise
            # Another request started one since this one read the status (a redelivered trigger): not a second.
            running = exc.details.get("execution_name")
            return self._result(Decision(None, f"Retraining already in progress ({running})"), None)
        return self._result(decision, run.execution_name)

    def evaluate(self, now: datetime) -> Decision:
        """The triggers' decision now; records the latest drift score, and the schedule's start on first use."""
        self.store.start_counting(now)
        latest = self._latest_drift()
        if latest is not None:
            self.store.record_drift_score(latest.drift_score)
        status = self.store.read()
        since = datetime.fromisoformat(status.last_retrain_time) if status.last_retrain_time else None
        return decide(now, status, self.settings, latest, self.performance.reading(since))

    def record_started(
        self, name: str, trigger: RetrainTrigger, reason: str, execution_arn: str | None = None
    ) -> RetrainRun:
        """The execution `name` runs: its ARN recorded and its lock renewed. An execution started elsewhere (a
        schedule) begins its run here; RetrainInProgressError if another execution holds the lock."""
        last = self.store.read().last_run
        if last is not None and last.execution_name == name and last.outcome is RunOutcome.RUNNING:
            run = last.model_copy(update={"execution_arn": execution_arn or last.execution_arn})
            if not self.store.holds_lock(name) and not self.store.begin(run):  # its lock expired meanwhile
                raise RetrainInProgressError(self.store.read().running_execution)
        else:
            run = RetrainRun(
                execution_name=name,
                execution_arn=execution_arn,
                trigger=trigger,
                reason=reason,
                started_at=iso(self.clock()),
            )
            if not self.store.begin(run):
                raise RetrainInProgressError(self.store.read().running_execution)
            self.store.count_started(trigger)
        self.store.update_running(run)
        return run

    def record_finished(self, name: str) -> RetrainRun:
        """The retrain succeeded: the interaction count restarts and last_retrain_time moves; the lock is released."""
        return self._end(name, RunOutcome.SUCCEEDED, None)

    def record_failed(self, name: str, error: str) -> RetrainRun:
        return self._end(name, RunOutcome.FAILED, error[:MAX_ERROR_LENGTH])

    def _start(self, trigger: RetrainTrigger, reason: str, now: datetime) -> RetrainRun:
        run = RetrainRun(
            execution_name=execution_name(trigger, now), trigger=trigger, reason=reason, started_at=iso(now)
        )
        if not self.store.begin(run):
            raise RetrainInProgressError(self.store.read().running_execution)
        self.store.count_started(trigger)
        execution_input = {
            "execution_name": run.execution_name,
            "trigger": trigger.value,
            "reason": reason,
            "requested_at": run.started_at,
            "events_prefix": ARCHIVE_PREFIX,
        }
        try:
            arn = self.launcher.launch(run.execution_name, execution_input)
        except Exception as exc:
            # Not started: the run ends failed at once and its lock is released, so the next request may try again.
            self._end(run.execution_name, RunOutcome.FAILED, f"not started: {exc}"[:MAX_ERROR_LENGTH])
            raise
        run = run.model_copy(update={"execution_arn": arn})
        self.store.update_running(run)
        logger.info("retrain started", extra=run.model_dump())
        return run

    def _end(self, name: str, outcome: RunOutcome, error: str | None) -> RetrainRun:
        last = self.store.read().last_run
        if last is None or last.execution_name != name:
            self.store.release(name)
            raise UnknownRetrainRunError(name)
        if last.outcome is not RunOutcome.RUNNING:  # a retried task: recorded already, counted once
            return last
        run = last.model_copy(update={"outcome": outcome, "finished_at": iso(self.clock()), "error": error})
        self.store.end(run)
        logger.info("retrain ended", extra=run.model_dump())
        return run

    def _latest_drift(self) -> DriftReport | None:
        try:
            return self.drift_reports.latest(self.clock())
        except aws_errors() as exc:
            logger.exception("drift reports unreadable")
            raise DriftReportsUnavailableError("the drift reports could not be read") from exc

    def _result(self, decision: Decision, name: str | None) -> RetrainRequestResult:
        return RetrainRequestResult(
            triggered=decision.triggered,
            reason=decision.reason,
            trigger=decision.trigger,
            execution_name=name,
            status=self.status(),
        )
