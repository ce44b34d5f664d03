"""The event archive over moto S3: batch objects, day compaction (idempotent, crash-safe) and dataset preparation."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime
from typing import Any

import pytest

from recloop.adapters.objects import ObjectStore
from recloop.core.errors import ConflictError
from recloop.core.events import EventType, Interaction
from recloop.learning.archive import (
    BatchRecord,
    CompactionConflictError,
    DayStillOpenError,
    InvalidArchiveObjectError,
    archive_batch,
    compact_closed_days,
    compact_day,
    prepare_dataset,
)
from tests.support.archive import archive_objects
from tests.support.environment import TEST_BUCKET

SHARD = "shardId-000000000000"
DAYS = ["2023-11-14", "2023-11-15", "2023-11-16"]
# The last day is still open: an hour past the end of the one before it.
NOW = datetime(2023, 11, 16, 1, 30, tzinfo=UTC)


def day_start(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def events_of(day: str, count: int, prefix: str) -> list[Interaction]:
    kinds = list(EventType)
    return [
        Interaction(
            event_id=f"{prefix}-{day}-{n:04d}",
            user_id=f"u{n % 13}",
            item_id=f"i{n % 17}",
            event_type=kinds[n % len(kinds)],
            timestamp=day_start(day) + 60.0 * n,
            received_at=day_start(day) + 60.0 * n,
        )
        for n in range(count)
    ]


class Stream:
    """A shard's records, archived in batches as the stream consumer archives them."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.sequence = 1000
        self.delivered: list[list[BatchRecord]] = []

    def deliver(self, events: list[Interaction], batch_size: int = 100) -> None:
        for start in range(0, len(events), batch_size):
            batch = []
            for event in events[start : start + batch_size]:
                batch.append(BatchRecord(SHARD, str(self.sequence), event))
                self.sequence += 1
            assert archive_batch(self.objects, batch) == {}
            self.delivered.append(batch)

    def redeliver(self, batch: int) -> None:
        assert archive_batch(self.objects, self.delivered[batch]) == {}

    def bisected_retry(self, batch: int) -> None:
        records = self.delivered[batch]
        for half in (records[: len(records) // 2], records[len(records) // 2 :]):
            assert archive_batch(self.objects, half) == {}


@pytest.fixture
def objects(aws: dict[str, Any]) -> ObjectStore:
    return ObjectStore(aws["s3"], TEST_BUCKET)


@pytest.fixture
def stream(objects: ObjectStore) -> Stream:
    """Three days of 250 events each; one batch redelivered, two retried bisected (their events archived twice)."""
    stream = Stream(objects)
    for day in DAYS:
        stream.deliver(events_of(day, 250, "e"))
    stream.redeliver(0)
    stream.bisected_retry(1)
    stream.bisected_retry(4)
    return stream


def all_events(stream: Stream) -> list[Interaction]:
    unique = {record.event.event_id: record.event for batch in stream.delivered for record in batch}
    return sorted(unique.values(), key=lambda e: (e.timestamp, e.event_id))


def batch_keys(objects: ObjectStore, day: str) -> list[str]:
    return list(objects.keys(f"events/dt={day}/"))


def part_keys(objects: ObjectStore, day: str) -> list[str]:
    return list(objects.keys(f"events/compacted/dt={day}/"))


def counted_gets(objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    got: list[str] = []
    get = objects.get

    def counting(key: str) -> Any:
        got.append(key)
        return get(key)

    monkeypatch.setattr(objects, "get", counting)
    return got


# --- batch objects and reading -----------------------------------------------------------------------------------


def test_a_redelivered_batch_changes_nothing_and_a_bisected_retry_is_read_back_once(stream: Stream, aws) -> None:
    archived = archive_objects(aws["s3"])
    assert len(archived) == 9 + 4  # three batches a day (100, 100, 50), the two retried batches' halves
    assert sum(len(ids) for ids in archived.values()) == 750 + 100 + 100  # the retried events are there twice
    assert prepare_dataset(stream.objects) == all_events(stream)


def test_preparation_takes_one_get_per_object_never_one_per_event(stream: Stream, objects, monkeypatch) -> None:
    got = counted_gets(objects, monkeypatch)
    dataset = prepare_dataset(objects)
    assert len(dataset) == 750 and sorted(got) == sorted(archive_objects(objects.s3))
    assert [e.timestamp for e in dataset] == sorted(e.timestamp for e in dataset)


def test_preparation_reports_the_objects_it_has_read(stream: Stream, objects: ObjectStore) -> None:
    compact_day(objects, DAYS[0], NOW)
    reports: list[tuple[str, int, int | None]] = []
    prepare_dataset(objects, progress=lambda step, done=0, total=None: reports.append((step, done, total)))
    objects_read = len(archive_objects(objects.s3))  # the first day's parts, the other days' batch objects
    assert reports == [
        ("listing the event archive", 0, None),
        *[("reading the event archive", n, objects_read) for n in range(1, objects_read + 1)],
        ("ordering the events by time", 0, None),
    ]


def test_since_reads_the_days_from_it_only(stream: Stream, objects, monkeypatch) -> None:
    got = counted_gets(objects, monkeypatch)
    dataset = prepare_dataset(objects, since=date(2023, 11, 15))
    assert {datetime.fromtimestamp(e.timestamp, UTC).date().isoformat() for e in dataset} == set(DAYS[1:])
    assert len(dataset) == 500 and not [key for key in got if "dt=2023-11-14" in key]


def test_an_archive_object_that_is_not_interactions_is_named(objects: ObjectStore) -> None:
    key = "events/dt=2023-11-14/shardId-000000000000/1-1-0.jsonl"
    objects.put(key, b'{"event_id": "x", "user_id": "u"}\n')
    with pytest.raises(InvalidArchiveObjectError, match=key):
        prepare_dataset(objects)


# --- compaction --------------------------------------------------------------------------------------------------


def test_closed_days_are_compacted_into_parts_each_event_once_and_their_batch_objects_deleted(
    stream: Stream, objects: ObjectStore, aws
) -> None:
    before = prepare_dataset(objects)
    done = compact_closed_days(objects, NOW)

    assert [(d.day, d.batch_objects, d.events, d.duplicates) for d in done] == [
        (DAYS[0], 3 + 2, 250, 100),  # its first batch redelivered (same key), its second retried bisected
        (DAYS[1], 3 + 2, 250, 100),
    ]
    assert [len(d.parts) for d in done] == [1, 1] and all(d.bytes > 0 for d in done)
    for day in DAYS[:2]:
        assert batch_keys(objects, day) == [] and part_keys(objects, day) == [
            f"events/compacted/dt={day}/part-00000.jsonl.gz"
        ]
        (ids,) = [
            ids for key, ids in archive_objects(aws["s3"]).items() if key.startswith(f"events/compacted/dt={day}/")
        ]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 250
    assert len(batch_keys(objects, DAYS[2])) == 3  # still open: not compacted
    assert prepare_dataset(objects) == before


def test_an_open_day_is_not_compacted(stream: Stream, objects: ObjectStore) -> None:
    with pytest.raises(DayStillOpenError):
        compact_day(objects, DAYS[2], NOW)
    assert compact_closed_days(objects, datetime(2023, 11, 15, 0, 30, tzinfo=UTC)) == []  # the 14th is still open
    assert part_keys(objects, DAYS[0]) == []


def test_a_rerun_of_a_finished_compaction_changes_nothing(stream: Stream, objects: ObjectStore, aws) -> None:
    compact_closed_days(objects, NOW)
    after = archive_objects(aws["s3"])
    assert compact_closed_days(objects, NOW) == []
    assert compact_day(objects, DAYS[0], NOW).parts == []
    assert archive_objects(aws["s3"]) == after


def test_parts_are_bounded_and_the_same_events_give_the_same_bytes(aws, objects: ObjectStore) -> None:
    events = events_of(DAYS[0], 600, "big")
    other = ObjectStore(aws["s3"], "recloop-test-other")
    aws["s3"].create_bucket(Bucket=other.bucket)
    for store in (objects, other):
        Stream(store).deliver(events)
        compact_day(store, DAYS[0], NOW, part_bytes=20_000)
    parts = part_keys(objects, DAYS[0])
    assert len(parts) > 3 and parts == part_keys(other, DAYS[0])
    for key in parts:
        mine, theirs = objects.get(key), other.get(key)
        assert mine is not None and theirs is not None and mine[0] == theirs[0]
        assert len(gzip.decompress(mine[0])) < 20_000 + 400  # the bound, plus at most the line that crossed it


def test_a_crash_before_the_batch_objects_are_deleted_leaves_readers_correct_and_a_rerun_finishes(
    stream: Stream, objects: ObjectStore, monkeypatch
) -> None:
    before = prepare_dataset(objects)

    def crash(keys: Any) -> None:
        raise RuntimeError("the function timed out")

    monkeypatch.setattr(objects, "delete_many", crash)
    with pytest.raises(RuntimeError):
        compact_day(objects, DAYS[0], NOW)
    assert len(part_keys(objects, DAYS[0])) == 1 and len(batch_keys(objects, DAYS[0])) == 5
    assert prepare_dataset(objects) == before  # the same events, held twice: read once
    monkeypatch.undo()

    rerun = compact_day(objects, DAYS[0], NOW)
    assert (rerun.parts, rerun.events, rerun.batch_objects) == ([], 0, 5)  # every event is in the part already
    assert batch_keys(objects, DAYS[0]) == [] and prepare_dataset(objects) == before


def test_a_crash_between_two_parts_leaves_readers_correct_and_a_rerun_writes_the_rest_once(
    stream: Stream, objects: ObjectStore, monkeypatch, aws
) -> None:
    before = prepare_dataset(objects)
    put_if_absent = objects.put_if_absent

    def crash_on_the_third_part(key: str, *args: Any) -> bool:
        if key.endswith("part-00002.jsonl.gz"):
            raise RuntimeError("the function timed out")
        return put_if_absent(key, *args)

    monkeypatch.setattr(objects, "put_if_absent", crash_on_the_third_part)
    with pytest.raises(RuntimeError):
        compact_day(objects, DAYS[0], NOW, part_bytes=5_000)
    assert len(part_keys(objects, DAYS[0])) == 2 and prepare_dataset(objects) == before
    monkeypatch.undo()

    rerun = compact_day(objects, DAYS[0], NOW, part_bytes=5_000)
    assert rerun.parts[0].endswith("part-00002.jsonl.gz") and rerun.duplicates > 0
    ids = [i for key, ids in archive_objects(aws["s3"]).items() if key.startswith("events/compacted/") for i in ids]
    assert len(ids) == len(set(ids)) == 250  # each event of the day in exactly one part
    assert batch_keys(objects, DAYS[0]) == [] and prepare_dataset(objects) == before


def test_a_compaction_that_finds_its_part_taken_stops_before_deleting_anything(
    stream: Stream, objects: ObjectStore, monkeypatch
) -> None:
    """Two runs at once: the other wrote part-00000 between this one's listing and its write."""
    before = prepare_dataset(objects)
    put_if_absent = objects.put_if_absent

    def the_other_run_first(key: str, *args: Any) -> bool:
        if key.startswith("events/compacted/"):
            put_if_absent(key, gzip.compress(b""), "application/gzip")
        return put_if_absent(key, *args)

    monkeypatch.setattr(objects, "put_if_absent", the_other_run_first)
    with pytest.raises(CompactionConflictError) as raised:
        compact_day(objects, DAYS[0], NOW)
    assert isinstance(raised.value, ConflictError)
    assert len(batch_keys(objects, DAYS[0])) == 5 and prepare_dataset(objects) == before


def test_events_archived_for_a_compacted_day_go_to_a_further_part(stream: Stream, objects: ObjectStore) -> None:
    compact_closed_days(objects, NOW)
    late = events_of(DAYS[0], 260, "e")[245:]  # 5 events the day's part holds, 10 new ones
    stream.deliver(late)

    (done,) = compact_closed_days(objects, NOW)
    assert (done.day, done.events, done.duplicates, done.batch_objects) == (DAYS[0], 10, 5, 1)
    assert done.parts == [f"events/compacted/dt={DAYS[0]}/part-00001.jsonl.gz"]
    assert len(prepare_dataset(objects)) == 760


def test_a_batch_object_compacted_while_it_is_read_is_read_from_the_day_s_parts(
    stream: Stream, objects: ObjectStore, monkeypatch
) -> None:
    before = prepare_dataset(objects)
    get = objects.get
    compactions: list[str] = []

    def compacted_meanwhile(key: str) -> Any:
        if key.startswith(f"events/dt={DAYS[0]}/") and not compactions:
            compactions.append(DAYS[0])
            compact_day(objects, DAYS[0], NOW)  # after the reader listed the day, before its first GET there
        return get(key)

    monkeypatch.setattr(objects, "get", compacted_meanwhile)
    assert prepare_dataset(objects) == before
    assert compactions and batch_keys(objects, DAYS[0]) == [] and len(part_keys(objects, DAYS[0])) == 1


def test_a_part_parsed_a_few_lines_at_a_time_gives_the_same_events(stream: Stream, objects, monkeypatch) -> None:
    compact_closed_days(objects, NOW)
    whole = prepare_dataset(objects)
    monkeypatch.setattr("recloop.learning.archive.PARSE_BYTES", 1_000)  # some 6 lines a time, cut anywhere
    assert prepare_dataset(objects) == whole and len(whole) == 750
