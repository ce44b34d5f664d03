"""OnlineUpdateFunction's handler in-process, with Kinesis batches shaped like
events/online_update/kinesis_batch_one_record.json, over moto S3 and SQS and a real Redis: redelivery, poison records,
failures during the update, the manual trigger."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import redis
from pydantic import ValidationError

from local.inprocess import LambdaContext, load_function
from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.container import get_container, reset_container
from recloop.ingest.consumer import StreamRecord
from recloop.learning.online.checkpoints import CHECKPOINTS_PREFIX, Checkpoint
from recloop.learning.online.results import UpdateOutcome
from recloop.models.bundle import ModelKind
from recloop.registry.model_registry import ModelRegistry
from tests.support.archive import archive_objects, archived_event_ids
from tests.support.emf import emitted, named
from tests.support.environment import EVENTS_DIR, REGION, TEST_BUCKET
from tests.support.learning import champion, stream_with_new_item
from tests.support.redis_state import redis_state
from tests.support.stream import SHARD, kinesis_batch, published_twice, records

BUFFER_SIZE = 40
CHAMPION = "mf-online-test-0"


@pytest.fixture
def dead_letter_queue(aws: dict[str, Any]) -> str:
    return boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-online-dlq")["QueueUrl"]


@pytest.fixture
def handler(
    aws: dict[str, Any], redis_client: redis.Redis, dead_letter_queue: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[dict], dict]:
    """The deployed function's entry point, configured as the template configures it (small buffer)."""
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dead_letter_queue)
    monkeypatch.setenv("ONLINE_LEARNING_BUFFER_SIZE", str(BUFFER_SIZE))
    monkeypatch.setenv("ONLINE_LEARNING_BATCH_SIZE", "8")
    reset_container()
    module = load_function("online_update")
    return lambda event: module.lambda_handler(event, LambdaContext())


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)


def archived_events(aws: dict[str, Any]) -> dict[str, list[str]]:
    """Each archive object with the event ids it holds."""
    return archive_objects(aws["s3"])


def archived_count(aws: dict[str, Any]) -> int:
    """How many events retraining reads back from the archive."""
    return len(archived_event_ids(aws["s3"]))


def dead_letters(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def model_versions(registry: ModelRegistry) -> list[str]:
    return sorted(m.version for m in registry.list_versions())


def test_a_redelivered_batch_changes_nothing_the_second_time(handler, aws, redis_client, registry) -> None:
    champion(registry, CHAMPION)
    batch = kinesis_batch(records(stream_with_new_item(40)))  # 60 events: one update of 40, 20 left

    assert handler(batch) == {"batchItemFailures": []}
    assert archived_count(aws) == 60 and len(archived_events(aws)) == 1  # one object for the batch
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20
    (published,) = [v for v in model_versions(registry) if v != CHAMPION]
    assert registry.get(published).parent_version == CHAMPION
    assert redis_client.hget(Keys.item_features("a0"), "cnt:purchase") == "20"
    before = (archived_events(aws), redis_state(redis_client), model_versions(registry))

    assert handler(batch) == {"batchItemFailures": []}  # the mapping delivers the same batch again

    assert (archived_events(aws), redis_state(redis_client), model_versions(registry)) == before
    assert redis_client.hget(Keys.ONLINE_STATS, "total_updates") == "1"


def test_a_poison_record_goes_to_the_dead_letter_queue_and_the_rest_is_processed(
    handler, aws, redis_client, dead_letter_queue
) -> None:
    good = records(stream_with_new_item(4)[:2])
    poison = StreamRecord(SHARD, "2001", b'{"user_id": "u1", "event_type": "teleport"}')
    reply = handler(kinesis_batch([good[0], poison, good[1]]))

    assert reply == {"batchItemFailures": []}  # the poison record does not block the shard
    assert archived_count(aws) == 2 and redis_client.llen(Keys.ONLINE_BUFFER) == 2
    (letter,) = dead_letters(dead_letter_queue)
    assert letter["shard_id"] == SHARD and letter["sequence_number"] == "2001"
    assert "event_type" in letter["reason"] and "item_id" in letter["reason"]
    assert base64.b64decode(letter["data_base64"]) == poison.data


def test_redis_failing_during_the_update_fails_the_batch_for_retry_and_keeps_the_buffer(
    handler, redis_client, registry, monkeypatch
) -> None:
    champion(registry, CHAMPION)
    batch = kinesis_batch(records(stream_with_new_item(40)))
    client = get_container().redis  # the function's own connection
    lrange = client.lrange

    def redis_gone_while_reading_the_buffer(key: str, *args: Any) -> Any:
        if key == Keys.ONLINE_BUFFER:
            raise redis.ConnectionError("Error 111 connecting to redis: Connection refused.")
        return lrange(key, *args)

    monkeypatch.setattr(client, "lrange", redis_gone_while_reading_the_buffer)
    with pytest.raises(redis.ConnectionError):
        handler(batch)  # Lambda reports a function error: the mapping retries (bisects) the batch
    monkeypatch.undo()

    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60  # every event still buffered, once
    assert redis_client.get(Keys.ONLINE_LOCK) is None
    assert model_versions(registry) == [CHAMPION]

    assert handler(batch) == {"batchItemFailures": []}  # the retry, Redis back
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20
    assert len(model_versions(registry)) == 2


def test_s3_failing_during_the_update_fails_the_batch_for_retry(handler, redis_client, registry, monkeypatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    champion(registry, CHAMPION)
    learner = get_container().online_learner

    def s3_unreachable(*_: Any, **__: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    monkeypatch.setattr(learner.registry, "register", s3_unreachable)
    with pytest.raises(EndpointConnectionError):
        handler(kinesis_batch(records(stream_with_new_item(40))))
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60 and model_versions(registry) == [CHAMPION]


def test_a_bug_in_the_update_never_blocks_the_shard(handler, aws, redis_client, registry, monkeypatch) -> None:
    champion(registry, CHAMPION)

    def bug(*_: Any, **__: Any) -> None:
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr("recloop.learning.online.learner.apply_update", bug)
    reply = handler(kinesis_batch(records(stream_with_new_item(40))))

    assert reply == {"batchItemFailures": []}  # the records were processed; the update is logged as failed
    assert archived_count(aws) == 60 and redis_client.llen(Keys.ONLINE_BUFFER) == 60
    assert model_versions(registry) == [CHAMPION]


def test_an_update_running_elsewhere_leaves_the_buffer_to_it(handler, redis_client, registry) -> None:
    champion(registry, CHAMPION)
    redis_client.set(Keys.ONLINE_LOCK, "another-invocation", ex=60)
    reply = handler(kinesis_batch(records(stream_with_new_item(40))))
    assert reply == {"batchItemFailures": []}
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60 and model_versions(registry) == [CHAMPION]


def test_a_backlog_is_caught_up_by_several_updates_in_one_batch(handler, redis_client, registry) -> None:
    champion(registry, CHAMPION)
    events = stream_with_new_item(40) + stream_with_new_item(40, "a-newer", 1_700_200_000.0)  # 120 events
    assert handler(kinesis_batch(records(events))) == {"batchItemFailures": []}
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 0  # three updates of 40
    assert redis_client.hget(Keys.ONLINE_STATS, "total_updates") == "3"


def test_trigger_runs_an_update_on_what_the_buffer_holds(handler, redis_client, registry) -> None:
    champion(registry, CHAMPION)
    assert handler(kinesis_batch(records(stream_with_new_item(20)))) == {"batchItemFailures": []}
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 30  # below the buffer size: no update yet

    sample = EVENTS_DIR / "online_update" / "trigger_an_update_on_the_buffered_events.json"
    reply = handler(json.loads(sample.read_text()))

    assert reply["status"] == "ok"
    result = reply["result"]
    assert result["outcome"] == UpdateOutcome.PUBLISHED.value and result["events"] == 30
    assert result["from_version"] == CHAMPION and result["to_version"] in model_versions(registry)
    assert registry.champion(use_cache=False).version == result["to_version"]
    assert registry.get(result["to_version"]).kind is ModelKind.MF
    json.dumps(reply)  # what Lambda serialises for the caller
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 0
    again = handler({"action": "trigger"})  # nothing left to learn from
    assert again["status"] == "ok" and again["result"]["outcome"] == "empty" and again["result"]["events"] == 0


def test_trigger_while_an_update_runs_says_so(handler, redis_client) -> None:
    redis_client.set(Keys.ONLINE_LOCK, "another-invocation", ex=60)
    assert handler({"action": "trigger"}) == {"status": "running"}


def test_rollback_to_the_newest_checkpoint_then_to_a_named_one(handler, registry, redis_client) -> None:
    first, second, third = published_twice(handler, registry)

    sample = EVENTS_DIR / "online_update" / "rollback_to_the_previous_checkpoint.json"
    reply = handler(json.loads(sample.read_text()))
    assert reply["status"] == "ok"
    assert (reply["champion"]["version"], reply["champion"]["previous_version"]) == (second, third)

    reply = handler({"action": "rollback", "version": first, "reason": "bad recommendations"})
    assert reply["status"] == "ok" and reply["champion"]["version"] == first
    assert registry.champion(use_cache=False).version == first
    assert redis_client.hget(Keys.ONLINE_STATS, "rollbacks") == "2"


def test_rollback_refusals_are_replies_naming_the_reason(handler, registry, aws) -> None:
    champion(registry, CHAMPION)
    assert handler({"action": "rollback"}) == {
        "status": "refused",
        "status_code": 409,
        "error": "no_previous_checkpoint",
        "message": "no checkpoint other than the champion to roll back to",
    }
    reply = handler({"action": "rollback", "version": "mf-never-checkpointed"})
    assert (reply["status"], reply["error"], reply["version"]) == (
        "refused",
        "checkpoint_not_found",
        "mf-never-checkpointed",
    )

    gone = Checkpoint(version="mf-deleted", created_at="2026-11-27T00:00:00+00:00", reason="test")
    aws["s3"].put_object(
        Bucket=TEST_BUCKET, Key=f"{CHECKPOINTS_PREFIX}mf-deleted.json", Body=gone.model_dump_json().encode()
    )
    reply = handler({"action": "rollback", "version": "mf-deleted"})
    assert (reply["status"], reply["error"], reply["version"]) == ("refused", "model_not_found", "mf-deleted")
    assert registry.champion(use_cache=False).version == CHAMPION


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"action": "retrain"},
        {"action": "trigger", "force": True},
        {"action": "rollback", "version": "../models/champion"},
    ],
)
def test_an_unknown_invocation_is_refused(handler, event: dict) -> None:
    with pytest.raises(ValidationError):
        handler(event)


def test_updates_and_an_operators_rollback_are_cloudwatch_metrics(handler, registry, capsys) -> None:
    published_twice(handler, registry)
    assert handler({"action": "rollback"})["status"] == "ok"

    data = emitted(capsys.readouterr().out)
    assert [d.values for d in named(data, "OnlineUpdatesPublished")] == [[1.0], [1.0]]
    assert [d.values for d in named(data, "OnlineUpdatesRolledBack")] == [[0.0], [0.0]]
    assert len(named(data, "OnlineUpdateDuration")) == len(named(data, "PredictionError")) == 2
    assert [d.values for d in named(data, "OnlineManualRollbacks")] == [[1.0]]
