"""Starting a retrain's execution: the retrain state machine in Step Functions, when one is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from recloop.adapters.aws import aws_errors
from recloop.adapters.workflows import ExecutionProgress, StepFunctions
from recloop.core.errors import UnavailableError

logger = Logger(child=True)


class RetrainingNotConfiguredError(UnavailableError):
    code = "retraining_not_configured"

    def __init__(self) -> None:
        super().__init__("retraining is not configured", setting="RETRAIN_STATE_MACHINE_ARN")


class RetrainLaunchFailedError(UnavailableError):
    code = "retrain_not_started"


class RetrainLauncher(Protocol):
    def require_configured(self) -> None:
        """RetrainingNotConfiguredError where retrains cannot be started (checked before the lock is taken)."""
        ...

    def launch(self, execution_name: str, execution_input: Mapping[str, Any]) -> str:
        """Start the retrain named `execution_name`; its execution ARN. ConflictError if the name was used."""
        ...

    def progress(self, execution_arn: str) -> ExecutionProgress | None:
        """Where an execution stands (None: not known here)."""
        ...


class StateMachineLauncher:
    def __init__(self, workflows: StepFunctions, state_machine_arn: str) -> None:
        self.workflows = workflows
        self.state_machine_arn = state_machine_arn

    def require_configured(self) -> None:
        return None

    def launch(self, execution_name: str, execution_input: Mapping[str, Any]) -> str:
        try:
            return self.workflows.start_execution(self.state_machine_arn, execution_name, execution_input)
        except aws_errors() as exc:
            logger.exception("retrain execution not started", extra={"execution_name": execution_name})
            raise RetrainLaunchFailedError("the retrain state machine did not start") from exc

    def progress(self, execution_arn: str) -> ExecutionProgress | None:
        try:
            return self.workflows.progress(execution_arn)
        except aws_errors() as exc:  # the status still answers, without the execution's step
            logger.warning("execution progress unreadable", extra={"execution_arn": execution_arn, "error": repr(exc)})
            return None


class NotConfiguredLauncher:
    """Where no retrain state machine is configured: every start is refused as unavailable."""

    def require_configured(self) -> None:
        raise RetrainingNotConfiguredError()

    def launch(self, execution_name: str, execution_input: Mapping[str, Any]) -> str:
        raise RetrainingNotConfiguredError()

    def progress(self, execution_arn: str) -> ExecutionProgress | None:
        return None
