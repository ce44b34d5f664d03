"""Retraining routes through the mlops function's resolver, with API Gateway proxy events, over real Redis, moto S3
and a moto Step Functions state machine: the status, forced and evaluated requests, 409 and the refusals."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import redis

from local.inprocess import LambdaContext, load_function
from recloop.container import get_container, reset_container
from tests.support.environment import EVENTS_DIR, REGION

RETRAIN = "/api/v1/mlops/retrain"
STATUS = f"{RETRAIN}/status"
PASS_THROUGH = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


class RetrainApi:
    """The mlops function's resolver, called with proxy events built from events/event/record_a_click.json."""

    def __init__(self) -> None:
        self.app = load_function("mlops").app
        self.template = json.loads((EVENTS_DIR / "event" / "record_a_click.json").read_text())

    def call(self, method: str, path: str, body: Any = None, raw_body: str | None = None) -> tuple[int, Any]:
        event = json.loads(json.dumps(self.template))
        event.update(
            httpMethod=method,
            path=path,
            resource=path,
            pathParameters=None,
            body=raw_body if raw_body is not None else (None if body is None else json.dumps(body)),
        )
        event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/v1{path}")
        response = self.app.resolve(event, LambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def status(self) -> tuple[int, Any]:
        return self.call("GET", STATUS)

    def request(self, body: Any = None, raw_body: str | None = None) -> tuple[int, Any]:
        return self.call("POST", RETRAIN, body, raw_body)


@pytest.fixture
def state_machine(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name="recloop-retrain", definition=PASS_THROUGH, roleArn="arn:aws:iam::123456789012:role/recloop-retrain"
    )["stateMachineArn"]
    monkeypatch.setenv("RETRAIN_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("MIN_NEW_INTERACTIONS", "50")
    reset_container()
    return sfn, arn


@pytest.fixture
def api(state_machine: tuple[Any, str], redis_client: redis.Redis) -> RetrainApi:
    return RetrainApi()


def test_the_status_of_a_system_never_retrained(api: RetrainApi) -> None:
    code, body = api.status()
    assert code == 200
    assert body["retraining_in_progress"] is False
    assert body["last_retrain_time"] is None
    assert body["new_interactions_since_retrain"] == 0
    assert body["metrics"]["total_retrains"] == 0
    assert body["metrics"]["drift_triggered_retrains"] == 0
    assert body["metrics"]["scheduled_retrains"] == 0


def test_a_forced_retrain_starts_the_state_machine_and_a_second_gets_409(
    api: RetrainApi, state_machine: tuple[Any, str]
) -> None:
    sfn, arn = state_machine
    code, body = api.request({"force": True, "reason": "Manual trigger for testing"})
    assert code == 200, body
    assert body["triggered"] is True
    assert body["reason"] == "Manual trigger for testing"
    assert body["status"]["retraining_in_progress"] is True
    assert body["status"]["metrics"]["total_retrains"] == 1
    name = body["execution_name"]
    assert name.startswith("retrain-manual-")
    execution = sfn.describe_execution(executionArn=body["status"]["last_run"]["execution_arn"])
    assert execution["name"] == name and execution["stateMachineArn"] == arn
    assert json.loads(execution["input"])["reason"] == "Manual trigger for testing"

    code, body = api.request({"force": True})
    assert code == 409
    assert body["error"] == "retrain_in_progress"
    assert body["execution_name"] == name
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1

    code, status = api.status()
    assert code == 200
    shown = status["execution"]
    assert shown["execution_arn"] == execution["executionArn"] and shown["status"] in ("RUNNING", "SUCCEEDED")
    assert shown["console_url"].endswith("#/v2/executions/details/" + execution["executionArn"])


def test_an_evaluated_request_says_why_it_did_not_start_one(api: RetrainApi) -> None:
    code, body = api.request({"force": False})
    assert code == 200
    assert body["triggered"] is False
    assert body["reason"].startswith("No trigger fired (no drift report, 0/50 new interactions")
    assert body["execution_name"] is None


def test_an_evaluated_request_starts_one_when_volume_is_reached(api: RetrainApi) -> None:
    get_container().retrain_status.add_new_interactions(50)
    code, body = api.request()  # no body: evaluate
    assert code == 200
    assert body["triggered"] is True
    assert body["trigger"] == "volume"
    assert body["reason"] == "New interactions threshold reached (50 >= 50)"
    assert body["status"]["metrics"]["volume_triggered_retrains"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"force": "yes"}, "force"),
        ({"force": True, "reason": ""}, "reason"),
        ({"force": True, "reason": "x" * 501}, "reason"),
        ({"force": True, "priority": "high"}, "priority"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api: RetrainApi, body: dict[str, Any], field: str) -> None:
    code, reply = api.request(body)
    assert code == 422
    assert reply["error"] == "validation_error"
    assert [error["field"] for error in reply["errors"]] == [field]


def test_a_body_that_is_not_json_is_refused(api: RetrainApi) -> None:
    code, reply = api.request(raw_body="{force: true")
    assert code == 422
    assert reply["errors"][0]["field"] == "body"


def test_without_a_state_machine_retraining_is_unavailable(
    aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RETRAIN_STATE_MACHINE_ARN", raising=False)
    reset_container()
    api = RetrainApi()
    code, body = api.request({"force": True})
    assert code == 503
    assert body["error"] == "retraining_not_configured"
    assert body["setting"] == "RETRAIN_STATE_MACHINE_ARN"
    assert api.status()[1]["retraining_in_progress"] is False
