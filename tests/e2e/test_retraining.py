"""Retraining end to end in LocalStack: the retrain state machine run by a forced request through the real
WorkflowFunction and TrainFunction on archived events, a second forced request refused while it runs, a failing
step that ends the execution failed with the lock released, the drift-check rule firing on its schedule, and
events of another kind making the next drift check start a retrain by itself."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from local.runtime import RunningStack
from tests.e2e.conftest import Http, drain_stream
from tests.e2e.test_online_learning import wait_for
from tests.support.learning import tastes

pytestmark = pytest.mark.e2e

RETRAIN = "/api/v1/mlops/retrain"
STATUS = "/api/v1/mlops/retrain/status"
# Every state a successful first retrain passes through (no champion yet: the gate passes, the version is promoted).
SUCCESSFUL_RUN_STATES = [
    "AcquireLock",
    "PrepareDataset",
    "ChooseWhereToTrain",
    "TrainOnLambda",
    "Gate",
    "GatePassed",
    "Register",
    "PromoteOrCanary",
    "ReleaseLock",
]


@pytest.fixture(autouse=True)
def empty_registry_after(stack: RunningStack, aws: Any) -> Iterator[None]:
    """Other tests expect no versions, no champion and no experiment: remove what a retrain wrote."""
    yield
    s3, bucket = aws("s3"), stack.outputs["BucketName"]
    for prefix in ("models/", "experiments/", "datasets/", "candidates/", "drift/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


def archive_some_taste(http: Http, stack: RunningStack) -> None:
    """Sixty users who each like six items of one of two groups, through the API, archived by the consumer."""
    run = uuid.uuid4().hex[:8]
    groups = {"a": [f"a{n}-{run}" for n in range(6)], "b": [f"b{n}-{run}" for n in range(6)]}
    history = tastes(60, time.time() - 3600, groups)
    fields = ("user_id", "item_id", "event_type", "timestamp", "event_id")
    events = [{name: getattr(e, name) for name in fields} for e in history]
    for start in range(0, len(events), 200):
        status, reply = http.post("/api/v1/events/batch", {"events": events[start : start + 200]})
        assert status == 202, reply
    drain_stream(stack)


def execution_states(aws: Any, execution_arn: str) -> list[str]:
    """The states an execution entered, in order."""
    sfn = aws("stepfunctions")
    entered = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        entered += [e["stateEnteredEventDetails"]["name"] for e in page["events"] if "stateEnteredEventDetails" in e]
    return entered


def describe_history(aws: Any, execution: dict[str, Any]) -> str:
    """The execution's history as the console lists it: each event's time since the start, type and state."""
    sfn, started = aws("stepfunctions"), execution["startDate"]
    lines = [f"{execution['name']}: {execution['status']}"]
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution["executionArn"]):
        for event in page["events"]:
            details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
            seconds = (event["timestamp"] - started).total_seconds()
            lines.append(f"  +{seconds:6.1f}s  {event['type']:<28} {details.get('name', '')}")
    return "\n".join(lines)


def finished_run(http: Http, timeout: float = 600) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status, body = http.get(STATUS)
        assert status == 200, body
        run = body["last_run"]
        return body if run is not None and run["outcome"] != "running" else None

    return wait_for(done, "the retrain run finished", timeout)


def test_a_forced_retrain_runs_the_state_machine_and_promotes_the_first_version(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    archive_some_taste(http, stack)

    status, started = http.post(RETRAIN, {"force": True, "reason": "e2e: first model"})
    assert status == 200 and started["triggered"], started
    name = started["execution_name"]
    assert name.startswith("retrain-manual-") and started["status"]["retraining_in_progress"]

    again, refused = http.post(RETRAIN, {"force": True, "reason": "e2e: a second one"})
    assert again == 409 and refused["error"] == "retrain_in_progress", refused

    body = finished_run(http)
    run = body["last_run"]
    assert run["outcome"] == "succeeded", run
    assert not body["retraining_in_progress"] and body["last_retrain_time"] is not None
    assert body["metrics"]["total_retrains"] >= 1 and body["metrics"]["manual_retrains"] >= 1

    sfn = aws("stepfunctions")
    execution = sfn.describe_execution(executionArn=run["execution_arn"])
    assert execution["status"] == "SUCCEEDED" and execution["name"] == name
    assert execution_states(aws, run["execution_arn"]) == SUCCESSFUL_RUN_STATES
    print(describe_history(aws, execution))

    status, models = http.get("/api/v1/mlops/models")
    assert status == 200
    champion = models["champion"]
    assert champion is not None and champion["version"].startswith("lgbm-"), models
    assert name in champion["reason"]


def test_a_failing_step_fails_the_execution_releases_the_lock_and_says_why(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    sfn = aws("stepfunctions")
    name = f"retrain-manual-e2e-{uuid.uuid4().hex[:8]}"
    execution_input = '{"trigger": "manual", "reason": "e2e: nothing to train on", "events_prefix": "e2e-empty/"}'
    arn = sfn.start_execution(
        stateMachineArn=stack.outputs["RetrainStateMachineArn"], name=name, input=execution_input
    )["executionArn"]

    def ended() -> dict[str, Any] | None:
        execution = sfn.describe_execution(executionArn=arn)
        return execution if execution["status"] != "RUNNING" else None

    execution = wait_for(ended, "the execution ended", 300)
    assert execution["status"] == "FAILED" and execution.get("error") == "RetrainFailed"
    assert execution_states(aws, arn)[-2:] == ["RecordFailure", "RetrainFailed"]

    status, body = http.get(STATUS)
    assert status == 200
    run = body["last_run"]
    assert run["execution_name"] == name and run["outcome"] == "failed"
    assert run["error"].startswith("NotEnoughEventsError"), run
    assert not body["retraining_in_progress"] and body["metrics"]["failed_retrains"] >= 1


def test_the_drift_check_rule_runs_the_state_machine_on_its_schedule(stack: RunningStack, aws: Any) -> None:
    """The e2e profile schedules the drift check every minute; an execution started by the rule succeeds (no
    champion yet: nothing to check, no trigger fires)."""
    sfn = aws("stepfunctions")
    machine = stack.outputs["DriftCheckStateMachineArn"]

    def a_finished_scheduled_run() -> list[dict[str, Any]] | None:
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        return [e for e in executions if e["status"] != "RUNNING"] or None

    executions = wait_for(a_finished_scheduled_run, "a drift check started by its EventBridge rule", 180)
    assert {e["status"] for e in executions} == {"SUCCEEDED"}, executions
    assert execution_states(aws, executions[0]["executionArn"])[:2] == ["ComputeDrift", "DecideTriggers"]


def test_shifted_events_make_the_drift_check_start_a_retrain_by_itself(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    """The champion learned from likes; then only views arrive. The next scheduled drift check (every minute in
    this profile) finds the event-type mix drifted and starts a retrain whose trigger is drift."""
    archive_some_taste(http, stack)
    status, started = http.post(RETRAIN, {"force": True, "reason": "e2e: a champion with a reference"})
    assert status == 200 and started["triggered"], started
    assert finished_run(http)["last_run"]["outcome"] == "succeeded"

    run = uuid.uuid4().hex[:8]
    now = time.time()
    views = [
        {"user_id": f"viewer{n % 50}-{run}", "item_id": f"v{n % 40}-{run}", "event_type": "view", "timestamp": now}
        for n in range(400)
    ]
    for start in range(0, len(views), 200):
        assert http.post("/api/v1/events/batch", {"events": views[start : start + 200]})[0] == 202
    drain_stream(stack)

    def a_drift_retrain() -> dict[str, Any] | None:
        body = http.get(STATUS)[1]
        run = body["last_run"]
        return body if run and run["trigger"] == "drift" else None

    body = wait_for(a_drift_retrain, "a retrain started by the drift check", 240)
    assert body["last_run"]["execution_name"].startswith("retrain-drift-")
    assert body["last_run"]["reason"].startswith("Data drift detected (score: "), body["last_run"]
    assert body["last_drift_score"] is not None and body["metrics"]["drift_triggered_retrains"] >= 1
    status, drift = http.get("/api/v1/mlops/drift")
    assert status == 200 and drift["latest"]["drifted"], drift["latest"]
    assert "event_type" in drift["latest"]["drifted_features"]
    finished_run(http)  # the drift retrain ends before the next test cleans up
