"""Step Functions: starting a state machine's execution (the retrain state machine)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from recloop.adapters.aws import error_code
from recloop.core.errors import ConflictError


class ExecutionAlreadyExistsError(ConflictError):
    """An execution of this name ran within the last 90 days (names are unique per state machine)."""

    code = "execution_already_exists"


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
