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


def runs_last(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run this test after every other of the session: it leaves the stack in a state other tests do not expect."""
    test.runs_last = True  # type: ignore[attr-defined]
    return test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: getattr(getattr(item, "function", None), "runs_last", False))  # stable: order kept


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    with running(E2E) as deployed:
        yield deployed


@pytest.fixture
def http(stack: RunningStack, stack_redis: redis.Redis) -> Http:
    return Http(stack.api_url)


def dead_letters(stack: RunningStack, wanted: Callable[[dict[str, Any]], bool], timeout: float = 90) -> list[dict]:
    """Messages of the stream consumer's dead-letter queue that `wanted` picks, once there are any; they are deleted,
    every other message stays in the queue. Those not wanted are hidden for a moment, so that the next receive
    reaches further into the queue (SQS hands out ten at a time, the oldest first in LocalStack)."""
    sqs = boto_client(stack.profile, "sqs")
    queue = stack.outputs["OnlineUpdateDeadLetterQueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=2)
        picked = [m for m in reply.get("Messages", []) if wanted(json.loads(m["Body"]))]
        for message in picked:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        if picked:
            return [json.loads(m["Body"]) for m in picked]
    raise TimeoutError(f"no such message in {queue} after {timeout:.0f} s")


def carries(letter: dict[str, Any], data: bytes) -> bool:
    """Whether a dead letter holds this record (the mapping's own failure records hold none)."""
    return base64.b64decode(letter.get("data_base64", "")) == data


DRAIN_MARKER = "e2e-drain-"


def carries_a_drain_marker(letter: dict[str, Any]) -> bool:
    """Whether a dead letter holds a marker of `drain_stream`, this one's or an earlier one's."""
    try:
        record = json.loads(base64.b64decode(letter.get("data_base64", "")))
    except ValueError:
        return False
    return isinstance(record, dict) and str(record.get("user_id", "")).startswith(DRAIN_MARKER)


def drain_stream(stack: RunningStack, timeout: float = 90) -> None:
    """Wait until the stream consumer (OnlineUpdateFunction) is done with every record put on the stream so far.

    A marker that can never be an interaction goes on every open shard; the consumer sets it aside in the
    dead-letter queue after every earlier record of its shard (LocalStack reads a shard in order, one batch at a
    time, whatever the mapping's ParallelizationFactor; on AWS, with a factor above 1, only each partition key's
    records are in order). Twice: the second marker's batch is only invoked once the invocation that set the first
    aside has returned (after setting it aside, that invocation may still run an online update). Markers of earlier
    drains are deleted as they come: LocalStack delivers the records of a split shard again and again
    (tests/e2e/test_stream_shards.py).
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
        marker = json.dumps({"user_id": f"{DRAIN_MARKER}{uuid.uuid4().hex}"}).encode()
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
            letters = dead_letters(stack, carries_a_drain_marker, deadline - time.monotonic())
            seen.update(letter["shard_id"] for letter in letters if carries(letter, marker))


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
