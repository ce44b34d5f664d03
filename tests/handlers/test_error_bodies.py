"""Error bodies say what went wrong in fixed words, never with the internals behind it: no host, URL, ARN, account,
exception type or message. Those go to the log, and each body keeps its `error` code and safe details."""

from __future__ import annotations

import json
from typing import Any

import redis

from local.inprocess import ApiClient
from recloop.adapters.functions import Invocation
from recloop.adapters.redis import Keys
from recloop.container import get_container, reset_container
from recloop.core.errors import UnavailableError
from tests.support.environment import TEST_BUCKET, TEST_STREAM

SECRET = "arn:aws:kinesis:us-east-1:123456789012:stream/internal-name at redis://10.1.2.3:6379"
# What an exception's text or repr brings along: none of it may reach a body.
LEAKS = ("arn:", "123456789012", "10.1.2.3", "redis://", "unix://", "Error(", "Exception", "Traceback", "botocore")


def assert_says_nothing_internal(body: Any, *also: str) -> None:
    text = json.dumps(body)
    for leak in (*LEAKS, *also):
        assert leak not in text, f"{leak!r} in {text}"


def test_health_with_redis_down_names_no_url_and_no_exception(api: ApiClient, monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://10.1.2.3:1")
    reset_container()
    status, body = api.request("ops", "GET", "/api/v1/health")
    assert status == 503 and body["status"] == "unhealthy"
    redis_health = body["components"]["redis"]
    assert (redis_health["status"], redis_health["error"]) == ("unhealthy", "not reachable")
    assert_says_nothing_internal(body, "ConnectionError", "111", "Connection refused")


def test_health_with_the_stream_and_bucket_gone_names_neither(api: ApiClient, aws: dict) -> None:
    aws["kinesis"].delete_stream(StreamName=TEST_STREAM)
    aws["s3"].delete_bucket(Bucket=TEST_BUCKET)
    status, body = api.request("ops", "GET", "/api/v1/health")
    assert status == 200 and body["status"] == "degraded"
    assert body["components"]["kinesis"]["error"] == body["components"]["s3"]["error"] == "not reachable"
    assert_says_nothing_internal(body, TEST_STREAM, TEST_BUCKET, "ResourceNotFound", "NoSuchBucket")


def test_health_does_not_relay_the_model_load_error(api: ApiClient, redis_client: redis.Redis) -> None:
    redis_client.hset(
        Keys.MODEL_STATUS,
        mapping={"champion": "mf-2", "serving": "mf-1", "error": f"mf-2: ClientError: AccessDenied on {SECRET}"},
    )
    status, body = api.request("ops", "GET", "/api/v1/health")
    assert status == 200 and body["status"] == "degraded"
    assert body["model"]["champion"] == "mf-2" and body["model"]["serving"] == "mf-1"
    assert body["model"]["error"] and "mf-2" in body["model"]["error"]
    assert_says_nothing_internal(body, "AccessDenied", "ClientError")


def test_stream_refusing_an_event_is_told_without_its_reason(api: ApiClient, monkeypatch) -> None:
    reason = f"ProvisionedThroughputExceededException: Rate exceeded for {SECRET}"
    monkeypatch.setattr(get_container().ingest.stream, "put", lambda events: [reason] * len(events))
    status, body = api.post_event(user_id="u", item_id="i", event_type="click")
    assert status == 503 and body["error"] == "stream_unavailable"
    assert_says_nothing_internal(body, "ProvisionedThroughput")


def test_batch_event_the_stream_refused_is_failed_without_its_reason(api: ApiClient, monkeypatch) -> None:
    reason = f"InternalFailure: {SECRET}"
    monkeypatch.setattr(get_container().ingest.stream, "put", lambda events: [None, reason])
    events = [{"user_id": f"u{n}", "item_id": "i", "event_type": "view"} for n in range(2)]
    status, body = api.request("event", "POST", "/api/v1/events/batch", {"events": events})
    assert status == 207 and [r["status"] for r in body["results"]] == ["accepted", "failed"]
    (error,) = body["results"][1]["errors"]
    assert error["field"] == "stream" and error["reason"]
    assert_says_nothing_internal(body, "InternalFailure")


def test_dependency_failure_raised_as_a_domain_error_is_503_in_fixed_words(api: ApiClient, monkeypatch) -> None:
    learner = get_container().online_learner

    def unavailable() -> None:
        raise UnavailableError(f"could not reach {SECRET}")

    monkeypatch.setattr(learner, "status", unavailable)
    status, body = api.request("mlops", "GET", "/api/v1/mlops/online-learning/status")
    assert status == 503 and body["error"] == "unavailable" and body["message"]
    assert_says_nothing_internal(body, "could not reach")


def test_online_update_function_error_is_502_without_its_message(api: ApiClient, monkeypatch) -> None:
    monkeypatch.setenv("ONLINE_UPDATE_FUNCTION_NAME", "recloop-online-update")
    reset_container()
    failed = Invocation(
        reply={"errorType": "ClientError", "errorMessage": f"AccessDenied: {SECRET}", "stackTrace": ["File x"]},
        function_error="Unhandled",
    )
    monkeypatch.setattr("recloop.handlers.http.online.invoke", lambda *_: failed)
    status, body = api.request("mlops", "POST", "/api/v1/mlops/online-learning/trigger")
    assert status == 502 and body["error"] == "online_update_failed"
    assert_says_nothing_internal(body, "AccessDenied", "ClientError", "File x")


def test_unexpected_failure_is_a_500_with_the_request_id_only(api: ApiClient, monkeypatch) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError(f"assertion about {SECRET}")

    monkeypatch.setattr(get_container().store, "upsert_items", broken)
    status, body = api.request("event", "POST", "/api/v1/items", {"items": [{"item_id": "x"}]})
    assert status == 500
    assert body["error"] == "internal_error" and body["request_id"]
    assert_says_nothing_internal(body, "RuntimeError", "assertion")


def test_unknown_route_is_a_404_in_the_error_shape(api: ApiClient) -> None:
    status, body = api.request("event", "POST", "/api/v1/nowhere", {})
    assert status == 404 and body["error"] == "no_route" and body["message"]


def test_body_that_is_not_json_labelled_is_415_in_the_error_shape(api: ApiClient) -> None:
    status, body = api.request(
        "event", "POST", "/api/v1/event", raw_body="u,i,click", headers={"Content-Type": "text/csv"}
    )
    assert status == 415 and body["error"] == "unsupported_media_type"


# Statuses whose body is the route's own: a batch every event of which was rejected, an unhealthy health report.
OWN_ERROR_BODIES = {("/api/v1/events/batch", "422"), ("/api/v1/health", "503")}


def test_every_error_status_in_the_openapi_has_the_error_body(api: ApiClient) -> None:
    spec = json.loads(api.functions["ops"].app.get_openapi_json_schema())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert {"422", "500"} <= set(operation["responses"]), (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400 and (path, status) not in OWN_ERROR_BODIES:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
