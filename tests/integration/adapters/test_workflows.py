"""The Step Functions adapter against moto's interpreter: starting an execution, and where it stands."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from moto.core.config import default_user_config

from recloop.adapters.workflows import ExecutionAlreadyExistsError, StepFunctions, console_url
from tests.support.environment import REGION

TWO_STEPS = {
    "StartAt": "PrepareDataset",
    "States": {
        "PrepareDataset": {"Type": "Pass", "Next": "TrainOnLambda"},
        "TrainOnLambda": {"Type": "Pass", "End": True},
    },
}


@pytest.fixture
def sfn(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    return boto3.client("stepfunctions", region_name=REGION)


def test_an_execution_reports_its_status_and_the_state_it_entered_last(sfn: Any) -> None:
    machine = sfn.create_state_machine(
        name="recloop-test-retrain", definition=json.dumps(TWO_STEPS), roleArn="arn:aws:iam::123456789012:role/r"
    )["stateMachineArn"]
    workflows = StepFunctions(sfn)
    arn = workflows.start_execution(machine, "retrain-manual-20261201T120000Z", {"trigger": "manual"})
    assert arn.endswith(":retrain-manual-20261201T120000Z")
    with pytest.raises(ExecutionAlreadyExistsError):  # the same name, another input: another request
        workflows.start_execution(machine, "retrain-manual-20261201T120000Z", {"trigger": "volume"})

    deadline = time.monotonic() + 10
    progress = workflows.progress(arn)
    while progress.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
        progress = workflows.progress(arn)
    assert (progress.status, progress.current_step) == ("SUCCEEDED", "TrainOnLambda")


def test_the_console_link_names_the_executions_region() -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:execution:recloop-retrain:retrain-drift-20261201T120000Z"
    assert console_url(arn) == (
        "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/" + arn
    )
