"""The state machines checked statically: every path ends, every task names a task its function runs, every
placeholder is substituted by the template, transient errors are retried and failures recorded. The SageMaker
branch, which LocalStack cannot run, is checked here and by the request's validation against botocore's model
(tests/unit/learning/test_sagemaker.py); the rest also runs for real in tests/e2e/test_retraining.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recloop.core.settings import Settings
from recloop.handlers import train, workflow
from recloop.learning.sagemaker import training_job_request
from recloop.learning.sagemaker_job import JobHyperparameters
from recloop.models.bundle import ModelKind
from tests.build.test_package import _CfnLoader  # the template's YAML with its short forms
from tests.support.environment import ROOT

MACHINES = {path.stem.removesuffix(".asl"): path for path in sorted((ROOT / "statemachines").glob("*.asl.json"))}
TASKS_BY_FUNCTION = {"${WorkflowFunctionArn}": workflow.TASKS, "${TrainFunctionArn}": train.TASKS}
TRANSIENT = "TransientStepError"


def definition(name: str) -> dict[str, Any]:
    return json.loads(MACHINES[name].read_text())


def template_machines() -> dict[str, dict[str, Any]]:
    resources = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)["Resources"]
    return {
        Path(r["Properties"]["DefinitionUri"]).name.removesuffix(".asl.json"): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Serverless::StateMachine"
    }


def successors(state: dict[str, Any]) -> list[str]:
    found = [state["Next"]] if "Next" in state else []
    found += [choice["Next"] for choice in state.get("Choices", [])]
    found += [state["Default"]] if "Default" in state else []
    return found + [catch["Next"] for catch in state.get("Catch", [])]


def test_both_machines_are_deployed_from_their_files() -> None:
    assert set(MACHINES) == {"drift_check", "retrain"} == set(template_machines())


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_state_is_reachable_and_every_path_ends(name: str) -> None:
    states = definition(name)["States"]
    reached, todo = set(), [definition(name)["StartAt"]]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        assert current in states, f"{current} is named but not defined"
        reached.add(current)
        state = states[current]
        assert state["Type"] in ("Succeed", "Fail") or state.get("End") or successors(state), f"{current} never ends"
        todo += successors(state)
    assert reached == set(states), f"unreachable: {set(states) - reached}"


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_placeholder_is_substituted_by_the_template(name: str) -> None:
    placeholders = set(re.findall(r"\$\{(\w+)\}", MACHINES[name].read_text()))
    assert placeholders == set(template_machines()[name]["DefinitionSubstitutions"])


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_lambda_task_names_a_task_of_its_function_and_retries_transient_errors(name: str) -> None:
    for state_name, state in definition(name)["States"].items():
        if state.get("Resource") != "arn:aws:states:::lambda:invoke":
            continue
        parameters = state["Parameters"]
        tasks = TASKS_BY_FUNCTION[parameters["FunctionName"]]
        assert parameters["Payload"]["task"] in tasks, f"{state_name}: {parameters['Payload']['task']} is not run"
        assert parameters["Payload"]["execution_name.$"] == "$$.Execution.Name"
        retried = {error for retry in state["Retry"] for error in retry["ErrorEquals"]}
        assert {TRANSIENT, "Lambda.TooManyRequestsException", "Lambda.ServiceException"} <= retried, state_name
        assert all(retry["BackoffRate"] > 1 for retry in state["Retry"]), f"{state_name}: no backoff"


def test_every_retrain_step_that_may_fail_is_recorded_and_releases_the_lock() -> None:
    states = definition("retrain")["States"]
    recording = {"RecordFailure"}
    for state_name, state in states.items():
        if state["Type"] != "Task" or state_name in recording:
            continue
        catch_all = [c for c in state.get("Catch", []) if c["ErrorEquals"] == ["States.ALL"]]
        assert catch_all and catch_all[0]["Next"] == "RecordFailure", f"{state_name} fails unrecorded"
        assert catch_all[0]["ResultPath"] == "$.error"
    assert states["RecordFailure"]["Next"] == "RetrainFailed" and states["RetrainFailed"]["Type"] == "Fail"
    # A lock held by another execution is not this one's to release.
    assert states["AcquireLock"]["Catch"][0] == {
        "ErrorEquals": ["RetrainInProgressError"],
        "ResultPath": "$.error",
        "Next": "AnotherRetrainRuns",
    }


def test_the_sagemaker_branch_passes_the_built_request_and_rejoins_the_lambda_branch() -> None:
    states = definition("retrain")["States"]
    choice = states["ChooseWhereToTrain"]
    assert choice["Choices"] == [
        {"Variable": "$.dataset.value.train_on", "StringEquals": "sagemaker", "Next": "BuildTrainingJob"}
    ]
    assert choice["Default"] == "TrainOnLambda"
    train_job = states["TrainOnSageMaker"]
    assert train_job["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"

    settings = Settings.model_validate(
        {"BUCKET_NAME": "b", "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/sm", "AWS_REGION": "us-east-1"}
    )
    request = training_job_request(
        settings,
        execution_name="retrain-manual-20261201T120000Z",
        dataset_key="datasets/retrain-manual-20261201T120000Z.jsonl.gz",
        source_key="sagemaker/source/abc.tar.gz",
        hyperparameters=JobHyperparameters(kind=ModelKind.LGBM, version="lgbm-1", holdout_fraction=0.1),
    )
    passed = {key.removesuffix(".$"): path for key, path in train_job["Parameters"].items()}
    assert set(passed) == set(request), "the state passes every field of the built request, and only those"
    assert all(path == f"$.training_job.value.request.{key}" for key, path in passed.items())
    failed_job_retried = [r for r in train_job["Retry"] if "States.TaskFailed" in r["ErrorEquals"]]
    assert not failed_job_retried, "a job name is used once: a failed job is not retried"
    assert train_job["TimeoutSeconds"] > settings.sagemaker_max_runtime_seconds
    assert states["CollectTrainingJob"]["Next"] == states["TrainOnLambda"]["Next"] == "Gate"
