"""The archive's batch objects: one per day and shard, named by the records they hold, each event id once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from recloop.core.events import EventType, Interaction
from recloop.learning.archive import BatchRecord, batch_objects, is_closed

DAY = 1_700_000_000.0  # 2023-11-14 22:13 UTC
SHARD = "shardId-000000000001"


def record(sequence: int, event_id: str | None = None, timestamp: float = DAY) -> BatchRecord:
    event = Interaction(
        event_id=event_id or f"e{sequence}",
        user_id="u1",
        item_id=f"i{sequence}",
        event_type=EventType.CLICK,
        timestamp=timestamp,
        received_at=timestamp,
    )
    return BatchRecord(SHARD, str(sequence), event)


def test_a_batch_of_one_day_is_one_object_of_json_lines_named_by_its_shard_and_sequence_numbers() -> None:
    (archived,) = batch_objects([record(n) for n in range(100, 350)])
    assert archived.key.startswith(f"events/dt=2023-11-14/{SHARD}/100-349-") and archived.key.endswith(".jsonl")
    assert [json.loads(line)["event_id"] for line in archived.body.splitlines()] == [f"e{n}" for n in range(100, 350)]
    assert archived.sequence_numbers == tuple(str(n) for n in range(100, 350))


def test_the_same_records_give_the_same_key_and_bytes_and_other_records_another_key() -> None:
    batch = [record(n) for n in range(10, 20)]
    (first,), (again,) = batch_objects(batch), batch_objects(list(batch))
    assert (first.key, first.body) == (again.key, again.body)  # a redelivery lands on the same key
    (left,), (right,) = batch_objects(batch[:5]), batch_objects(batch[5:])  # a bisected retry
    (gapped,) = batch_objects([*batch[:3], *batch[4:]])  # same first and last record, one fewer between
    assert len({first.key, left.key, right.key, gapped.key}) == 4
    assert gapped.key.split("/")[-1].startswith("10-19-") and first.key.split("/")[-1].startswith("10-19-")


def test_events_of_two_days_go_to_one_object_each_and_an_event_id_twice_in_a_batch_is_written_once() -> None:
    batch = [record(1), record(2, timestamp=DAY + 7200), record(3, event_id="e1"), record(4)]
    today, tomorrow = batch_objects(batch)
    assert today.key.startswith("events/dt=2023-11-14/") and tomorrow.key.startswith("events/dt=2023-11-15/")
    assert [json.loads(line)["event_id"] for line in today.body.splitlines()] == ["e1", "e4"]
    assert today.sequence_numbers == ("1", "3", "4")  # the repeated record fails or succeeds with its object
    assert tomorrow.sequence_numbers == ("2",)


def test_a_day_is_closed_an_hour_after_its_end() -> None:
    assert not is_closed("2023-11-14", datetime(2023, 11, 15, 0, 59, tzinfo=UTC))
    assert is_closed("2023-11-14", datetime(2023, 11, 15, 1, 0, tzinfo=UTC))
