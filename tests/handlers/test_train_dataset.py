"""TrainFunction's prepare step over moto S3: closed days of the archive compacted first, then the dataset written
from parts and batch objects alike; a compaction that fails leaves the step to read the batch objects."""

from __future__ import annotations

import time
from typing import Any

import pytest

from local.inprocess import LambdaContext, load_function
from recloop.container import get_container
from recloop.retraining.workflow import read_dataset
from tests.support.learning import tastes
from tests.support.stream import records

TODAY = time.time() // 86_400 * 86_400  # its start, UTC
GROUPS = {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]}


def archived(aws: dict[str, Any], prefix: str) -> list[str]:
    pages = aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=get_container().objects.bucket, Prefix=prefix)
    return [listed["Key"] for page in pages for listed in page.get("Contents", [])]


@pytest.fixture
def archive(aws: dict[str, Any], redis_client: Any) -> list[str]:
    """Sixty events of three days ago and sixty of today, archived by the stream consumer; their event ids."""
    old, today = tastes(10, TODAY - 3 * 86_400, GROUPS), tastes(10, TODAY, GROUPS)
    today = [event.model_copy(update={"event_id": f"today-{event.event_id}"}) for event in today]
    consumer = get_container().stream_consumer
    assert consumer.archive_many(records(old)) == {} and consumer.archive_many(records(today, 5000)) == {}
    return sorted(event.event_id for event in old + today)


def prepare(execution_name: str) -> dict[str, Any]:
    event = {"task": "prepare_dataset", "execution_name": execution_name}
    return load_function("train").lambda_handler(event, LambdaContext())


def test_the_prepare_step_compacts_the_closed_days_then_reads_parts_and_batch_objects(aws, archive) -> None:
    reply = prepare("retrain-manual-20261201T0900Z")

    assert reply["events"] == len(archive) == 120
    assert len(archived(aws, "events/compacted/")) == 1  # the old day, compacted
    (today,) = archived(aws, "events/dt=")  # today's batch object: today is still open
    assert "/dt=" in today
    dataset = read_dataset(get_container().objects, reply["dataset_key"])
    assert sorted(event.event_id for event in dataset) == archive
    assert [event.timestamp for event in dataset] == sorted(event.timestamp for event in dataset)


def test_a_compaction_that_fails_leaves_the_step_to_read_the_batch_objects(aws, archive, monkeypatch) -> None:
    def s3_refuses(*_: Any, **__: Any) -> None:
        raise RuntimeError("AccessDenied")

    monkeypatch.setattr("recloop.learning.archive.compact_day", s3_refuses)
    reply = prepare("retrain-manual-20261201T1000Z")

    assert reply["events"] == 120
    assert archived(aws, "events/compacted/") == [] and len(archived(aws, "events/dt=")) == 2
