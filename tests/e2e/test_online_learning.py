"""Online learning end to end: events through API Gateway -> Kinesis -> OnlineUpdateFunction (archive, buffer,
update) -> a new registry version that the recommend function serves; the manual trigger and rollback through the
API; a poison record on the stream ending in the dead-letter queue. The E2E profile's buffer holds 50 events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.runtime import RunningStack
from local.services import E2E
from recloop.adapters.objects import ObjectStore
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.registry.model_registry import ModelRegistry
from tests.e2e.conftest import Http, carries, dead_letters
from tests.support.archive import archive_objects
from tests.support.learning import stream_with_new_item, trained

pytestmark = pytest.mark.e2e

BUFFER_SIZE = E2E.online_learning_buffer_size
STATUS = "/api/v1/mlops/online-learning/status"
TIMEOUT_SECONDS = 120


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], Any], what: str, timeout: float = TIMEOUT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})")


@pytest.fixture(autouse=True)
def empty_registry_after(stack: RunningStack, aws: Any) -> Iterator[None]:
    """Other tests expect a registry without versions or champion: remove what these tests registered."""
    yield
    s3, bucket = aws("s3"), stack.outputs["BucketName"]
    for prefix in ("models/", "checkpoints/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


def register_small_mf(
    stack: RunningStack, aws: Any, stack_redis: Any, prefix: str = "mf-e2e"
) -> tuple[ModelRegistry, str]:
    """A small MF model (two groups of users with their own items) registered in the stack's bucket."""
    registry = ModelRegistry(ObjectStore(aws("s3"), stack.outputs["BucketName"]), stack_redis)
    mf, history = trained()
    version = f"{prefix}-{uuid.uuid4().hex[:8]}"
    metadata = ModelMetadata(version=version, kind=ModelKind.MF)
    metadata.data_window.end = history[-1].timestamp
    registry.register(mf.to_bundle(metadata))
    return registry, version


def promote_champion(stack: RunningStack, aws: Any, stack_redis: Any) -> tuple[ModelRegistry, str]:
    """`register_small_mf`, promoted to champion."""
    registry, version = register_small_mf(stack, aws, stack_redis)
    registry.promote(version, reason="e2e champion")
    return registry, version


def interactions(users: int, new_item: str) -> list[dict[str, Any]]:
    """The champion's 'a' users like a new item and buy a0, its 'b' users buy b0 (recent timestamps)."""
    fields = ("user_id", "item_id", "event_type", "timestamp", "event_id")
    events = stream_with_new_item(users, new_item, time.time() - 600)
    return [{name: getattr(e, name) for name in fields} for e in events]


def archived_event_ids(aws: Any, bucket: str) -> set[str]:
    return {event_id for ids in archive_objects(aws("s3"), bucket).values() for event_id in ids}


def test_a_full_buffer_archives_the_events_and_publishes_an_updated_champion(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    bucket = stack.outputs["BucketName"]
    _, champion = promote_champion(stack, aws, stack_redis)
    events = interactions(40, unique("a-new"))  # 60 events: one update of 50, 10 left in the buffer
    assert len(events) > BUFFER_SIZE

    status, reply = http.post("/api/v1/events/batch", {"events": events})
    assert (status, reply["accepted"]) == (202, len(events))

    def all_archived() -> bool:
        return {e["event_id"] for e in events} <= archived_event_ids(aws, bucket)

    wait_for(all_archived, "every event archived under events/dt=...")

    def published() -> dict | None:
        code, body = http.get(STATUS)
        assert code == 200, body
        return body if body["total_updates"] >= 1 and body["published"] >= 1 else None

    online = wait_for(published, "an online update published")
    assert online["last_outcome"] == "published" and online["buffer_capacity"] == BUFFER_SIZE
    assert online["buffer_size"] == len(events) - BUFFER_SIZE
    assert [c["version"] for c in online["checkpoints"]][:1] == [champion]

    code, models = http.get("/api/v1/mlops/models")
    assert code == 200
    (child,) = [m for m in models["models"] if m["parent_version"] == champion]
    assert child["version"] == online["current_version"] == models["champion"]["version"]
    assert child["kind"] == "mf" and child["metrics"]["online_events"] == BUFFER_SIZE


def test_trigger_and_rollback_through_the_api(http: Http, stack: RunningStack, aws: Any, stack_redis: Any) -> None:
    registry, champion = promote_champion(stack, aws, stack_redis)
    events = interactions(20, unique("a-new"))[:20]  # below the buffer size: no update by itself
    status, reply = http.post("/api/v1/events/batch", {"events": events})
    assert (status, reply["accepted"]) == (202, len(events))
    wait_for(lambda: http.get(STATUS)[1]["buffer_size"] == len(events), "every event buffered")

    code, body = http.post("/api/v1/mlops/online-learning/trigger", None)

    assert code == 200 and body["status"] == "ok", body
    result = body["result"]
    assert result["outcome"] == "published" and result["events"] == len(events)
    assert result["from_version"] == champion and registry.champion(use_cache=False).version == result["to_version"]
    assert http.get(STATUS)[1]["buffer_size"] == 0

    stack_redis.set("{olb}:lock", "another-invocation", ex=60)
    code, body = http.post("/api/v1/mlops/online-learning/trigger", None)
    assert code == 409 and body["error"] == "update_running"
    stack_redis.delete("{olb}:lock")

    code, body = http.post("/api/v1/mlops/online-learning/rollback", {"reason": "e2e"})
    assert code == 200 and body["champion"]["version"] == champion
    assert body["champion"]["previous_version"] == result["to_version"]
    code, body = http.post("/api/v1/mlops/online-learning/rollback", {"version": "mf-never-checkpointed"})
    assert code == 404 and body["error"] == "checkpoint_not_found"


def test_recommend_serves_the_version_an_online_update_published(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    promote_champion(stack, aws, stack_redis)
    events = interactions(20, unique("a-new"))[:20]
    assert http.post("/api/v1/events/batch", {"events": events})[0] == 202
    wait_for(lambda: http.get(STATUS)[1]["buffer_size"] == len(events), "every event buffered")
    code, body = http.post("/api/v1/mlops/online-learning/trigger", None)
    assert code == 200 and body["result"]["outcome"] == "published", body
    version = body["result"]["to_version"]

    def served() -> dict | None:
        code, body = http.post("/api/v1/recommend", {"user_id": "user0", "num_recommendations": 5})
        assert code == 200, body
        return body if body["model_version"] == version else None

    # MODEL_CHECK_SECONDS (5 s) after the promotion, every recommend instance serves the new version.
    recommendation = wait_for(served, "recommend serving the updated version", timeout=30)
    assert recommendation["cold_start"] is False and recommendation["items"]


def test_a_poison_record_on_the_stream_ends_in_the_dead_letter_queue(stack: RunningStack, aws: Any) -> None:
    data = json.dumps({"user_id": unique("poison"), "event_type": "teleport"}).encode()
    put = aws("kinesis").put_record(StreamName=stack.outputs["StreamName"], Data=data, PartitionKey="poison")

    (letter,) = dead_letters(stack, lambda letter: carries(letter, data))

    assert letter["shard_id"] == put["ShardId"] and letter["sequence_number"] == put["SequenceNumber"]
    assert "event_type" in letter["reason"] and "item_id" in letter["reason"]
