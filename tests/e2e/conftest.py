"""The deployed stack in LocalStack, brought up once for the e2e session and torn down after it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from local.runtime import E2E, RunningStack, boto_client, running


class Http:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode()

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    with running(E2E) as deployed:
        yield deployed


@pytest.fixture
def http(stack: RunningStack, stack_redis: redis.Redis) -> Http:
    return Http(stack.api_url)


@pytest.fixture
def stack_redis(stack: RunningStack) -> Iterator[redis.Redis]:
    """The stack's Redis, emptied before each test so every test starts from a known state."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def aws(stack: RunningStack):
    return lambda service: boto_client(stack.profile, service)
