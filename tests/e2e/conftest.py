"""The deployed stack in LocalStack, brought up once for the e2e session and torn down after it."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from local.runtime import RunningStack, running
from local.services import E2E, boto_client


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


def dead_letters(stack: RunningStack, wanted: Callable[[dict[str, Any]], bool], timeout: float = 90) -> list[dict]:
    """Messages of the stream consumer's dead-letter queue that `wanted` picks, once there are any; they are deleted,
    every other message stays in the queue."""
    sqs = boto_client(stack.profile, "sqs")
    queue = stack.outputs["OnlineUpdateDeadLetterQueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0)
        picked = [m for m in reply.get("Messages", []) if wanted(json.loads(m["Body"]))]
        for message in picked:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        if picked:
            return [json.loads(m["Body"]) for m in picked]
    raise TimeoutError(f"no such message in {queue} after {timeout:.0f} s")


def carries(letter: dict[str, Any], data: bytes) -> bool:
    """Whether a dead letter holds this record (the mapping's own failure records hold none)."""
    return base64.b64decode(letter.get("data_base64", "")) == data


def drain_stream(stack: RunningStack, timeout: float = 90) -> None:
    """Wait until the stream consumer (OnlineUpdateFunction) is done with every record put on the stream so far.

    A marker that can never be an interaction goes on every open shard; the consumer sets it aside in the
    dead-letter queue after every earlier record of its shard (a shard is processed in order). Twice: the second
    marker's batch is only invoked once the invocation that set the first aside has returned (after setting it
    aside, that invocation may still run an online update).
    """
    kinesis = boto_client(stack.profile, "kinesis")
    stream = stack.outputs["StreamName"]
    shards = [
        s
        for s in kinesis.list_shards(StreamName=stream)["Shards"]
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]
    for _ in range(2):
        # JSON like every record on the stream, but no interaction (no item_id, no event_type).
        marker = json.dumps({"user_id": f"e2e-drain-{uuid.uuid4().hex}"}).encode()
        for shard in shards:
            kinesis.put_record(
                StreamName=stream,
                Data=marker,
                PartitionKey="drain",
                ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"],
            )
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < len(shards):
            letters = dead_letters(stack, lambda body, m=marker: carries(body, m), deadline - time.monotonic())
            seen.update(letter["shard_id"] for letter in letters)


@pytest.fixture
def stack_redis(stack: RunningStack) -> Iterator[redis.Redis]:
    """The stack's Redis, emptied before each test so every test starts from a known state (once the stream
    consumer has caught up: records of earlier tests would otherwise land after the flush)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    drain_stream(stack)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def aws(stack: RunningStack):
    return lambda service: boto_client(stack.profile, service)
