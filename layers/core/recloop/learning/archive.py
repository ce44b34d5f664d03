"""The event archive in S3: one object per stream batch, closed days compacted into a few large parts, and the
training dataset read back from both.

    events/dt=YYYY-MM-DD/<shard>/<first seq>-<last seq>-<digest>.jsonl   a stream batch's events of that day
    events/compacted/dt=YYYY-MM-DD/part-NNNNN.jsonl.gz                    a closed day's events, gzipped JSON lines

Both under one prefix (`events/`, or another given to the functions here): one grant reads the archive, one
lifecycle rule keeps it, and a retrain pointed at another prefix reads nothing of it.

**Batch objects.** The stream consumer writes one object per Kinesis batch and day (the day of each event's
timestamp), written only if absent. Its key names the shard, the first and last sequence numbers it holds and a
digest of all of them, so a redelivered batch lands on the same key and changes nothing, and a key never stands for
two different contents. A retry that holds other records (a bisected half, a retry from the first failed record, a
replayed batch) writes another object: an event may be archived more than once, and readers keep one copy per id.

**Compaction** (`compact_day`). A day is compacted once closed, CLOSED_AFTER past its end. A run reads the event
ids of the day's parts, then the day's batch objects in key order, writes the events no part holds yet to new parts
(numbered after the existing ones, about PART_BYTES of JSON lines each, each written only if absent), and only then
deletes the batch objects it read. Readers stay correct whenever a run stops: a part only ever holds events that
were in batch objects, and no batch object goes before the parts holding its events exist. A rerun finds those
parts, writes what is missing and deletes what is left; a run with nothing left to do changes nothing. Of two runs
at once, one finds its part number taken and stops before deleting anything (CompactionConflictError). Events that
arrive for a closed day after its compaction (a replayed batch, a late client timestamp) wait in batch objects
for the next run, which writes them to a further part.
The batch objects are deleted rather than kept: otherwise every read would list them all (at 1,000 events/s, some
300,000 keys a day), and storage would double. The bucket is versioned, so they stay recoverable for the 30 days
its lifecycle keeps non-current versions.

**Reading** (`prepare_dataset`) GETs the parts and the batch objects with a bounded number of requests in flight,
never one per event; keeps one copy of each event id and orders the events by time. A batch object that is gone
when it is read was compacted meanwhile: its day's parts are listed again.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from aws_lambda_powertools import Logger
from pydantic import TypeAdapter, ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.core.errors import ConflictError, InvalidInputError
from recloop.core.events import Interaction
from recloop.core.progress import Progress, no_progress

logger = Logger(child=True)

ARCHIVE_PREFIX = "events/"
COMPACTED_FOLDER = "compacted/"
DAY_FOLDER = "dt="
# Uncompressed JSON lines per part (some 200,000 events): few GETs for a day, and a part's bytes and events stay a
# small share of a training function's memory.
PART_BYTES = 32 * 1024 * 1024
# JSON lines parsed at a time (about 25,000 events).
PARSE_BYTES = 4 * 1024 * 1024
# Requests in flight at once: botocore's default connection pool holds 10.
CONCURRENCY = 10
# How long after its end (UTC) a day is taken as closed: the stream delivers nearly all of a day's events by then.
CLOSED_AFTER = timedelta(hours=1)
PART_NAME = re.compile(r"part-(\d{5})\.jsonl\.gz$")

_INTERACTIONS = TypeAdapter(list[Interaction])


class InvalidArchiveObjectError(InvalidInputError):
    """An archive object that does not hold JSON lines of interactions: it is named, and nothing is dropped."""

    code = "invalid_archive_object"


class DayStillOpenError(InvalidInputError):
    """A day still receiving events is not compacted."""

    code = "day_still_open"


class CompactionConflictError(ConflictError):
    """Another compaction of the day wrote a part first: this one stopped, deleting nothing; a rerun continues."""

    code = "compaction_conflict"


# --- batch objects (written by the stream consumer) -----------------------------------------------------------------


@dataclass(frozen=True)
class BatchRecord:
    shard_id: str
    sequence_number: str
    event: Interaction


@dataclass(frozen=True)
class BatchObject:
    key: str
    body: bytes
    sequence_numbers: tuple[str, ...]  # every record it archives, those whose event id came twice included


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def batch_objects(records: Iterable[BatchRecord], prefix: str = ARCHIVE_PREFIX) -> list[BatchObject]:
    """A batch's records as archive objects: one per day and shard, each event id once (its first record)."""
    groups: dict[tuple[str, str], list[BatchRecord]] = {}
    for record in records:
        groups.setdefault((day_of(record.event.timestamp), record.shard_id), []).append(record)
    found = []
    for (day, shard_id), group in groups.items():
        sequence_numbers = tuple(record.sequence_number for record in group)
        digest = hashlib.sha256("\n".join(sequence_numbers).encode()).hexdigest()[:16]
        name = f"{sequence_numbers[0]}-{sequence_numbers[-1]}-{digest}.jsonl"
        key = f"{prefix}{DAY_FOLDER}{day}/{shard_id}/{name}"
        seen: set[str] = set()
        lines = []
        for record in group:
            if record.event.event_id not in seen:
                seen.add(record.event.event_id)
                lines.append(record.event.to_record())
        found.append(BatchObject(key, b"\n".join(lines) + b"\n", sequence_numbers))
    return found


def archive_batch(objects: ObjectStore, records: Sequence[BatchRecord]) -> dict[str, Exception]:
    """Write a batch's archive objects (concurrently when its events fall on several days); the failures by sequence
    number: each record of an object that could not be written. An object already there is success."""
    failures: dict[str, Exception] = {}

    def write(batch: BatchObject) -> None:
        try:
            objects.put_if_absent(batch.key, batch.body, "application/x-ndjson")
        except Exception as exc:  # reported per record: the records fail for retry
            failures.update(dict.fromkeys(batch.sequence_numbers, exc))

    written = batch_objects(records)
    if len(written) == 1:
        write(written[0])
    elif written:
        with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(written))) as pool:
            list(pool.map(write, written))
    return failures


# --- reading ----------------------------------------------------------------------------------------------------


def prepare_dataset(
    objects: ObjectStore,
    since: date | None = None,
    *,
    prefix: str = ARCHIVE_PREFIX,
    concurrency: int = CONCURRENCY,
    progress: Progress = no_progress,
) -> list[Interaction]:
    """Every event archived under `prefix` on the days from `since` (all days without it), one per event id,
    ordered by time (ties by event id, so the same archive gives the same list however far it is compacted).
    `progress` counts the objects read."""
    first_day = since.isoformat() if since else ""
    progress("listing the event archive")
    batch_keys = [key for key in objects.keys(prefix + DAY_FOLDER) if _day(key) >= first_day]
    part_keys = [key for key in objects.keys(prefix + COMPACTED_FOLDER + DAY_FOLDER) if _day(key) >= first_day]
    events: dict[str, Interaction] = {}
    copies = 0
    compacted_meanwhile: set[str] = set()
    listed = part_keys + batch_keys
    for read, (key, found) in enumerate(_in_order(lambda key: _events(objects, key), listed, concurrency), 1):
        progress("reading the event archive", read, len(listed))
        if found is None:
            compacted_meanwhile.add(_day(key))
            continue
        for event in found:
            copies += 1
            events.setdefault(event.event_id, event)
    if compacted_meanwhile:
        read = set(part_keys)
        late = [
            key
            for day in sorted(compacted_meanwhile)
            for key in objects.keys(f"{prefix}{COMPACTED_FOLDER}{DAY_FOLDER}{day}/")
            if key not in read
        ]
        for _, found in _in_order(lambda key: _events(objects, key), late, concurrency):
            for event in found or ():  # parts are never deleted
                copies += 1
                events.setdefault(event.event_id, event)
        part_keys += late
    progress("ordering the events by time")
    dataset = sorted(events.values(), key=lambda event: (event.timestamp, event.event_id))
    logger.info(
        "dataset prepared from the archive",
        extra={
            "events": len(dataset),
            "duplicates": copies - len(dataset),
            "parts": len(part_keys),
            "batch_objects": len(batch_keys),
            "since": first_day or None,
        },
    )
    return dataset


def _events(objects: ObjectStore, key: str) -> list[Interaction] | None:
    """The object's events, or None if it is gone. Parsed a few MB at a time: a part's lines are never all held
    as separate copies."""
    body = _body(objects, key)
    if body is None:
        return None
    events: list[Interaction] = []
    start = 0
    while start < len(body):
        end = body.find(b"\n", min(start + PARSE_BYTES, len(body) - 1)) + 1 or len(body)
        events += _parsed(key, [line for line in body[start:end].splitlines() if line.strip()])
        start = end
    return events


def _lines(objects: ObjectStore, key: str) -> list[bytes] | None:
    """The object's non-empty lines, or None if it is gone."""
    body = _body(objects, key)
    return None if body is None else [line for line in body.splitlines() if line.strip()]


def _body(objects: ObjectStore, key: str) -> bytes | None:
    stored = objects.get(key)
    if stored is None:
        return None
    return gzip.decompress(stored[0]) if key.endswith(".gz") else stored[0]


def _parsed(key: str, lines: list[bytes]) -> list[Interaction]:
    try:
        return _INTERACTIONS.validate_json(b"[" + b",".join(lines) + b"]")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InvalidArchiveObjectError(
            f"{key}: not JSON lines of interactions (line {where}: {first['msg']})", field="archive"
        ) from None


def _day(key: str) -> str:
    """The day of an archive key (the folder after `dt=`)."""
    start = key.index(DAY_FOLDER) + len(DAY_FOLDER)
    return key[start : start + 10]


def _in_order[Item, Result](
    fetch: Callable[[Item], Result], items: Sequence[Item], concurrency: int
) -> Iterator[tuple[Item, Result]]:
    """Each item with `fetch(item)`, in the items' order, run on `concurrency` threads, at most twice as many
    fetched ahead of the caller (a slow caller never holds more than that in memory)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        pending: deque[tuple[Item, Future[Result]]] = deque()
        for item in items:
            pending.append((item, pool.submit(fetch, item)))
            if len(pending) >= 2 * concurrency:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


# --- compaction -------------------------------------------------------------------------------------------------


@dataclass
class DayCompaction:
    """What one compaction run did to a day."""

    day: str
    batch_objects: int = 0  # read, then deleted
    events: int = 0  # written to new parts
    duplicates: int = 0  # copies of events a part holds already, or met earlier in the run
    parts: list[str] = field(default_factory=list)  # written by this run
    bytes: int = 0  # compressed, of those parts


def is_closed(day: str, now: datetime) -> bool:
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1) + CLOSED_AFTER <= now


def closed_days(objects: ObjectStore, now: datetime, prefix: str = ARCHIVE_PREFIX) -> list[str]:
    """The closed days that still have batch objects, oldest first."""
    days = (name.removeprefix(DAY_FOLDER) for name in objects.folders(prefix) if name.startswith(DAY_FOLDER))
    return sorted(day for day in days if is_closed(day, now))


def compact_closed_days(
    objects: ObjectStore,
    now: datetime | None = None,
    *,
    prefix: str = ARCHIVE_PREFIX,
    budget_seconds: float | None = None,
    part_bytes: int = PART_BYTES,
    concurrency: int = CONCURRENCY,
) -> list[DayCompaction]:
    """Compact each closed day that has batch objects, oldest first; no day is begun after `budget_seconds`."""
    now = now or datetime.now(UTC)
    started = time.monotonic()
    done = []
    for day in closed_days(objects, now, prefix):
        if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
            break
        done.append(compact_day(objects, day, now, prefix=prefix, part_bytes=part_bytes, concurrency=concurrency))
    return done


def compact_day(
    objects: ObjectStore,
    day: str,
    now: datetime | None = None,
    *,
    prefix: str = ARCHIVE_PREFIX,
    part_bytes: int = PART_BYTES,
    concurrency: int = CONCURRENCY,
) -> DayCompaction:
    """The day's batch objects into parts, then deleted (see the module's docstring)."""
    if not is_closed(day, now or datetime.now(UTC)):
        raise DayStillOpenError(f"{day} is not closed until {CLOSED_AFTER} past its end (UTC)", field="day")
    result = DayCompaction(day)
    sources = list(objects.keys(f"{prefix}{DAY_FOLDER}{day}/"))
    if not sources:
        return result
    folder = f"{prefix}{COMPACTED_FOLDER}{DAY_FOLDER}{day}/"
    existing = [key for key in objects.keys(folder) if PART_NAME.search(key)]
    stored: set[str] = set()
    for key, found in _in_order(lambda key: _events(objects, key), existing, concurrency):
        if found is None:
            raise ConflictError(f"{key} was listed, then gone: parts are never deleted", field="part")
        stored.update(event.event_id for event in found)
    parts = _PartWriter(objects, folder, _next_part_number(existing), part_bytes, result)
    read = []
    for key, lines in _in_order(lambda key: _lines(objects, key), sources, concurrency):
        if lines is None:  # compacted and deleted by another run since the listing
            continue
        read.append(key)
        for line, event in zip(lines, _parsed(key, lines), strict=True):
            if event.event_id in stored:
                result.duplicates += 1
                continue
            stored.add(event.event_id)
            parts.add(line)
    parts.close()
    # Only now: every event of these objects is in a part.
    objects.delete_many(read)
    result.batch_objects = len(read)
    logger.info("archive day compacted", extra=vars(result))
    return result


def _next_part_number(parts: Iterable[str]) -> int:
    numbers = [int(match.group(1)) for key in parts if (match := PART_NAME.search(key))]
    return max(numbers, default=-1) + 1


class _PartWriter:
    """Lines into gzipped parts of about `part_bytes` each, each written only if its name is free."""

    def __init__(self, objects: ObjectStore, folder: str, number: int, part_bytes: int, result: DayCompaction):
        self.objects = objects
        self.folder = folder
        self.number = number
        self.part_bytes = part_bytes
        self.result = result
        self.lines: list[bytes] = []
        self.size = 0

    def add(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        if self.size >= self.part_bytes:
            self.close()

    def close(self) -> None:
        if not self.lines:
            return
        key = f"{self.folder}part-{self.number:05d}.jsonl.gz"
        # mtime 0: the same lines give the same bytes.
        data = gzip.compress(b"\n".join(self.lines) + b"\n", compresslevel=6, mtime=0)
        if not self.objects.put_if_absent(key, data, "application/gzip"):
            raise CompactionConflictError(f"{key} was written by another compaction of {self.result.day}", part=key)
        self.result.parts.append(key)
        self.result.events += len(self.lines)
        self.result.bytes += len(data)
        self.number += 1
        self.lines, self.size = [], 0
