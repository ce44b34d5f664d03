"""Interaction logs from files for training and replays: one loader for every file format.

- CSV with header ``user_id,item_id,event_type,timestamp`` (unix seconds; an ``event_id`` column is kept if present);
- JSON lines, one event per line with the same fields;
- MovieTweetings: a folder holding ``ratings.dat`` (``user::movie::rating::timestamp``; its SHA256SUMS are checked
  when present) or the ``ratings.dat`` file itself, ratings mapped to event types by MOVIETWEETINGS_EVENTS.

The stream consumer's S3 archive is read by ``recloop.learning.archive.prepare_dataset``.

Events come back sorted by time (stable: ties keep file order). Historical data of any date loads: bounds on
timestamps belong to the live API, not to offline data.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recloop.core.events import EventType, Interaction

# MovieTweetings rating (0-10) -> event type.
MOVIETWEETINGS_EVENTS = {
    **dict.fromkeys((9, 10), "purchase"),
    **dict.fromkeys((7, 8), "like"),
    **dict.fromkeys((5, 6), "click"),
    **dict.fromkeys((3, 4), "view"),
    **dict.fromkeys((0, 1, 2), "dislike"),
}
REQUIRED_COLUMNS = frozenset({"user_id", "item_id", "event_type", "timestamp"})
RATINGS_FILE = "ratings.dat"


@dataclass
class Dataset:
    events: list[Interaction]
    source: str
    notes: dict[str, Any] = field(default_factory=dict)


def rating_event(rating: int) -> EventType:
    return EventType(MOVIETWEETINGS_EVENTS[rating])


def load_dataset(path: Path, limit: int | None = None) -> Dataset:
    """Any supported log, sorted by time, cut to its first `limit` events."""
    if path.is_dir() or path.name.endswith(".dat"):
        folder = path if path.is_dir() else path.parent
        checked = verify_sha256sums(folder) if path.is_dir() and (folder / "SHA256SUMS").exists() else []
        rows = _movietweetings_rows(folder / RATINGS_FILE if path.is_dir() else path)
        return Dataset(_interactions(rows, limit), source=str(path), notes={"sha256_verified": checked})
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = REQUIRED_COLUMNS - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)}")
            records = list(reader)
    rows = [
        (str(r["user_id"]), str(r["item_id"]), r["event_type"], float(r["timestamp"]), r.get("event_id"))
        for r in records
    ]
    return Dataset(_interactions(rows, limit), source=str(path))


def load_events(path: Path, limit: int | None = None) -> list[Interaction]:
    return load_dataset(path, limit).events


def verify_sha256sums(folder: Path) -> list[str]:
    """Check every file listed in ``folder/SHA256SUMS``; returns the names checked, raises on a mismatch."""
    checked = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != expected:
            raise ValueError(f"{folder / name}: sha256 {actual} does not match SHA256SUMS ({expected})")
        checked.append(name)
    return checked


def sort_by_time(events: Sequence[Interaction]) -> list[Interaction]:
    return sorted(events, key=lambda e: e.timestamp)  # stable: ties keep file order


def time_split(events: Sequence[Interaction], holdout_fraction: float) -> tuple[list[Interaction], list[Interaction]]:
    """Earlier events train, later ones validate: never the future to predict the past."""
    cut = _holdout_cut(len(events), holdout_fraction)
    return list(events[:cut]), list(events[cut:])


def holdout_start(events: Sequence[Interaction], holdout_fraction: float) -> float | None:
    """When `time_split`'s holdout of these time-ordered events begins; None if it is empty."""
    cut = _holdout_cut(len(events), holdout_fraction)
    return events[cut].timestamp if cut < len(events) else None


def _holdout_cut(count: int, holdout_fraction: float) -> int:
    return int(count * (1 - holdout_fraction))


Row = tuple[str, str, str, float, str | None]  # user, item, event type, unix seconds, event id if the source has one


def _movietweetings_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                user, movie, rating, ts = line.strip().split("::")
                rows.append((user, movie, rating_event(int(rating)).value, float(ts), None))
    return rows


def _interactions(rows: Iterable[Row], limit: int | None) -> list[Interaction]:
    """Stable sort by time, cut, then build each event (ids: the source's, else the row's position in time)."""
    ordered = sorted(rows, key=lambda row: row[3])
    if limit is not None:
        ordered = ordered[:limit]
    return [
        Interaction(
            event_id=event_id or f"row-{n}",
            user_id=user,
            item_id=item,
            event_type=EventType(kind),
            timestamp=ts,
            received_at=ts,
        )
        for n, (user, item, kind, ts, event_id) in enumerate(ordered)
    ]


def encode_dataset(events: Sequence[Interaction]) -> bytes:
    """A retrain's dataset (`datasets/<execution>.jsonl.gz`, read by either training branch): gzipped JSON lines."""
    return gzip.compress(b"\n".join(event.to_record() for event in events) + b"\n", compresslevel=6)


def decode_dataset(data: bytes) -> list[Interaction]:
    return [Interaction.model_validate_json(line) for line in gzip.decompress(data).splitlines() if line.strip()]
