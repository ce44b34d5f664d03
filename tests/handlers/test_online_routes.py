"""Online-learning routes of the mlops function (API Gateway proxy events), over moto S3 and Lambda and a real Redis.

Trigger and rollback run in the online-update function. moto plays Lambda without Docker (`use_docker: False`):
an invocation answers with the reply queued through moto's API, and these tests queue the reply the real
online-update handler gave to the same request, so each route is checked against what the function really answers.
The deployed wiring (payload, permissions, timeouts) is covered end to end.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
import requests

from local.inprocess import ApiClient, LambdaContext, load_function
from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.container import reset_container
from recloop.learning.online.checkpoints import CHECKPOINTS_PREFIX, Checkpoint
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import REGION, TEST_BUCKET
from tests.support.learning import champion, stream_with_new_item
from tests.support.stream import kinesis_batch, published_twice, records

STATUS = "/api/v1/mlops/online-learning/status"
TRIGGER = "/api/v1/mlops/online-learning/trigger"
ROLLBACK = "/api/v1/mlops/online-learning/rollback"
FUNCTION = "recloop-test-online-update"
CHAMPION = "mf-online-test-0"
MOTO_LAMBDA_RESULTS = "http://motoapi.amazonaws.com/moto-api/static/lambda-simple/response"


@pytest.fixture
def lambda_service(aws: dict[str, Any]) -> Iterator[Any]:
    """moto's Lambda without Docker, with the online-update function created in it."""
    from moto import mock_aws

    with mock_aws(config={"lambda": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="online-update", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
        client = boto3.client("lambda", region_name=REGION)
        client.create_function(
            FunctionName=FUNCTION,
            Runtime="python3.12",
            Role=role,
            Handler="app.lambda_handler",
            Code={"ZipFile": code.getvalue()},
        )
        yield client


@pytest.fixture
def configured(
    aws: dict[str, Any], redis_client: redis.Redis, lambda_service: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The mlops function's and the online-update function's environment, as the template sets them."""
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-online-dlq")["QueueUrl"]
    monkeypatch.setenv("ONLINE_UPDATE_FUNCTION_NAME", FUNCTION)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)
    monkeypatch.setenv("ONLINE_LEARNING_BUFFER_SIZE", "40")
    monkeypatch.setenv("ONLINE_LEARNING_BATCH_SIZE", "8")
    reset_container()
    return aws


@pytest.fixture
def mlops(configured: dict[str, Any]) -> ApiClient:
    return ApiClient()


@pytest.fixture
def online_update(configured: dict[str, Any]) -> Any:
    module = load_function("online_update")
    return lambda event: module.lambda_handler(event, LambdaContext())


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)


def queue_function_reply(reply: Any) -> None:
    """The next invocation of the function (in moto) answers with `reply`."""
    body = {"results": [json.dumps(reply)], "region": REGION}
    requests.post(MOTO_LAMBDA_RESULTS, json=body, timeout=5).raise_for_status()


# ---- status ------------------------------------------------------------------------------------------------


def test_status_before_anything_happened(mlops: ApiClient) -> None:
    status, body = mlops.request("mlops", "GET", STATUS)
    assert status == 200
    assert body["total_updates"] == 0 and body["buffer_size"] == 0 and body["buffer_capacity"] == 40
    assert body["current_version"] is None and body["checkpoints"] == [] and body["update_running"] is False
    assert body["learning_rate"] == 0.001 and body["batch_size"] == 8
    assert body["recent_updates"] == []


def test_status_after_an_update_through_the_stream(mlops: ApiClient, online_update: Any, registry) -> None:
    champion(registry, CHAMPION)
    online_update(kinesis_batch(records(stream_with_new_item(40))))  # 60 events: one update of 40

    status, body = mlops.request("mlops", "GET", STATUS)

    assert status == 200
    assert body["total_updates"] == 1 and body["published"] == 1 and body["rollbacks"] == 0
    assert body["buffer_size"] == 20 and body["buffer_utilization"] == 0.5
    assert body["current_version"] == registry.champion(use_cache=False).version != CHAMPION
    assert [c["version"] for c in body["checkpoints"]] == [CHAMPION]
    assert body["last_outcome"] == "published" and body["avg_update_time_ms"] > 0
    (update,) = body["recent_updates"]
    assert (update["outcome"], update["events"], update["version"]) == ("published", 40, body["current_version"])
    assert update["at"] == body["last_update_at"] and update["error_after"] == body["last_error_after"]
    assert update["error_before"] == body["last_error_before"] and update["update_ms"] > 0


def test_status_is_503_when_redis_is_down(mlops: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    reset_container()
    status, body = mlops.request("mlops", "GET", STATUS)
    assert status == 503 and body["error"] == "feature_store_unavailable"


def test_status_is_503_when_s3_does_not_answer(mlops: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUCKET_NAME", "recloop-bucket-that-is-not-there")
    reset_container()
    status, body = mlops.request("mlops", "GET", STATUS)
    assert status == 503 and body["error"] == "registry_unavailable"


# ---- trigger -----------------------------------------------------------------------------------------------


def test_trigger_answers_with_the_functions_update_result(
    mlops: ApiClient, online_update: Any, registry, redis_client
) -> None:
    champion(registry, CHAMPION)
    online_update(kinesis_batch(records(stream_with_new_item(20))))  # 30 events: below the buffer size
    queue_function_reply(online_update({"action": "trigger"}))  # what the function answers to the trigger

    status, body = mlops.request("mlops", "POST", TRIGGER)

    assert status == 200 and body["status"] == "ok"
    result = body["result"]
    assert result["outcome"] == "published" and result["events"] == 30 and result["from_version"] == CHAMPION
    assert registry.champion(use_cache=False).version == result["to_version"]
    assert redis_client.hget(Keys.ONLINE_STATS, "total_updates") == "1"


def test_trigger_while_an_update_runs_is_a_409(mlops: ApiClient, online_update: Any, redis_client) -> None:
    redis_client.set(Keys.ONLINE_LOCK, "another-invocation", ex=60)
    queue_function_reply(online_update({"action": "trigger"}))
    status, body = mlops.request("mlops", "POST", TRIGGER)
    assert status == 409 and body["error"] == "update_running"


def test_trigger_with_an_unexpected_reply_is_a_502(mlops: ApiClient) -> None:
    queue_function_reply({"errorMessage": "boom", "errorType": "RuntimeError"})
    status, body = mlops.request("mlops", "POST", TRIGGER)
    assert status == 502 and body["error"] == "online_update_failed"


def test_trigger_without_a_configured_function_is_a_503(mlops: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONLINE_UPDATE_FUNCTION_NAME")
    reset_container()
    status, body = mlops.request("mlops", "POST", TRIGGER)
    assert status == 503 and body["error"] == "online_update_unavailable"


# ---- rollback ----------------------------------------------------------------------------------------------


def test_rollback_answers_with_the_new_champion(mlops: ApiClient, online_update: Any, registry) -> None:
    first, second, third = published_twice(online_update, registry)
    queue_function_reply(online_update({"action": "rollback", "version": second}))

    status, body = mlops.request("mlops", "POST", ROLLBACK, {"version": second, "reason": "bad recommendations"})

    assert status == 200 and body["status"] == "rolled_back"
    assert body["champion"]["version"] == second and body["champion"]["previous_version"] == third
    status, body = mlops.request("mlops", "GET", STATUS)
    assert body["current_version"] == second and body["rollbacks"] == 1
    assert [c["version"] for c in body["checkpoints"]] == [second, first]


REFUSALS = {
    "unknown checkpoint": ({"version": "mf-never-checkpointed"}, 404, "checkpoint_not_found"),
    "checkpointed version deleted": ({"version": "mf-deleted"}, 404, "model_not_found"),
    "nothing to roll back to": (None, 409, "no_previous_checkpoint"),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_rollback_refusals_keep_the_champion(mlops: ApiClient, online_update: Any, registry, case: tuple) -> None:
    request_body, status, error = case
    champion(registry, CHAMPION)
    if request_body is not None:  # a checkpoint record naming a version that is no longer registered
        gone = Checkpoint(version="mf-deleted", created_at="2026-11-27T00:00:00+00:00", reason="test")
        registry.objects.put(f"{CHECKPOINTS_PREFIX}mf-deleted.json", gone.model_dump_json().encode())
    queue_function_reply(online_update({"action": "rollback", **(request_body or {})}))

    code, body = mlops.request("mlops", "POST", ROLLBACK, request_body)

    assert (code, body["error"]) == (status, error)
    if request_body:
        assert body["version"] == request_body["version"] and request_body["version"] in body["message"]
    assert registry.champion(use_cache=False).version == CHAMPION


def test_rollback_with_an_unexpected_reply_is_a_502(mlops: ApiClient) -> None:
    queue_function_reply({"status": "ok", "champion": None})
    status, body = mlops.request("mlops", "POST", ROLLBACK, {})
    assert status == 502 and body["error"] == "online_update_failed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "../models/champion"}, "version"),
        ({"version": 7}, "version"),
        ({"reason": ""}, "reason"),
        ({"force": True}, "force"),
    ],
)
def test_rollback_with_a_bad_body_is_a_422_naming_the_field(mlops: ApiClient, body: dict, field: str) -> None:
    status, reply = mlops.request("mlops", "POST", ROLLBACK, body)
    assert status == 422 and reply["error"] == "validation_error"
    assert [e["field"] for e in reply["errors"]] == [field]
