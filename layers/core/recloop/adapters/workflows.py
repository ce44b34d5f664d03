"""Step Functions: starting the retrain state machine's executions, and where one stands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from recloop.adapters.aws import error_code
from recloop.core.errors import ConflictError


class ExecutionAlreadyExistsError(ConflictError):
    """An execution of this name ran within the last 90 days (names are unique per state machine)."""

    code = "execution_already_exists"


# The newest events of an execution's history hold the state it entered last.
HISTORY_EVENTS_READ = 25


class ExecutionProgress(BaseModel):
    status: str  # RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED
    current_step: str | None  # the state entered last: the one running, or where the execution ended


class StepFunctions:
    def __init__(self, sfn_client: Any) -> None:
        self.sfn = sfn_client

    def start_execution(self, state_machine_arn: str, name: str, execution_input: Mapping[str, Any]) -> str:
        """Start `name` with `execution_input` (as JSON); the execution's ARN. Other AWS errors propagate."""
        try:
            reply = self.sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(dict(execution_input))
            )
        except Exception as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                raise ExecutionAlreadyExistsError(f"execution {name!r} already exists", execution_name=name) from exc
            raise
        return str(reply["executionArn"])

    def progress(self, execution_arn: str) -> ExecutionProgress:
        """Where an execution stands: its status and the state it entered last (newest history events first)."""
        execution = self.sfn.describe_execution(executionArn=execution_arn)
        history = self.sfn.get_execution_history(
            executionArn=execution_arn, reverseOrder=True, maxResults=HISTORY_EVENTS_READ
        )
        entered = [event for event in history["events"] if "stateEnteredEventDetails" in event]
        last = max(entered, key=lambda event: event["id"], default=None)  # by id: whatever order an emulator keeps
        step = last["stateEnteredEventDetails"]["name"] if last else None
        return ExecutionProgress(status=execution["status"], current_step=step)


def console_url(execution_arn: str) -> str:
    """The execution's page in the AWS console (the region from the ARN: arn:<partition>:states:<region>:...)."""
    region = execution_arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"
