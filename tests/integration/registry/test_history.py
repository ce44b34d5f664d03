"""The champion history over moto S3: each record trims the trail to its newest records, oldest first."""

from __future__ import annotations

import re
from typing import Any

import pytest

from recloop.adapters.objects import ObjectsNotDeletedError, ObjectStore
from recloop.registry.history import HISTORY_PREFIX, ChampionHistory
from tests.support.environment import TEST_BUCKET


class CountingS3:
    """The moto client, counting DeleteObjects requests; `refuse_deletes` makes S3 report every key as not deleted."""

    def __init__(self, client: Any, refuse_deletes: bool = False) -> None:
        self.client = client
        self.refuse_deletes = refuse_deletes
        self.delete_requests: list[int] = []

    def delete_objects(self, **kwargs: Any) -> Any:
        objects = kwargs["Delete"]["Objects"]
        self.delete_requests.append(len(objects))
        if self.refuse_deletes:
            return {"Errors": [{"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"} for o in objects]}
        return self.client.delete_objects(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def record_versions(history: ChampionHistory, versions: range) -> None:
    for n in versions:
        history.record({"version": f"v{n}", "previous_version": f"v{n - 1}" if n else None}, "promote")


def stored_history(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=HISTORY_PREFIX).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_recording_keeps_only_the_newest_records(aws: dict[str, Any]) -> None:
    history = ChampionHistory(ObjectStore(aws["s3"], TEST_BUCKET), max_records=5)
    record_versions(history, range(8))

    kept = stored_history(aws["s3"])
    assert len(kept) == 5
    assert [key.rsplit("-", 1)[1] for key in kept] == ["v3.json", "v4.json", "v5.json", "v6.json", "v7.json"]
    assert [r["version"] for r in history.recent()] == ["v7", "v6", "v5", "v4", "v3"]  # newest first, as before
    assert [r["version"] for r in history.recent(limit=2)] == ["v7", "v6"]


def test_a_backlog_is_deleted_in_batches(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A trail older than the bound (e.g. written before it existed) goes in one trim, DELETE_BATCH keys a request."""
    record_versions(ChampionHistory(ObjectStore(aws["s3"], TEST_BUCKET), max_records=100), range(12))
    monkeypatch.setattr("recloop.adapters.objects.DELETE_BATCH", 4)
    s3 = CountingS3(aws["s3"])
    history = ChampionHistory(ObjectStore(s3, TEST_BUCKET), max_records=3)

    record_versions(history, range(12, 13))

    assert s3.delete_requests == [4, 4, 2]
    assert [r["version"] for r in history.recent()] == ["v12", "v11", "v10"]


def test_a_refused_trim_keeps_the_record_and_the_next_one_trims(aws: dict[str, Any]) -> None:
    refusing = CountingS3(aws["s3"], refuse_deletes=True)
    record_versions(ChampionHistory(ObjectStore(refusing, TEST_BUCKET), max_records=2), range(4))
    assert refusing.delete_requests == [1, 2]  # tried after the third and the fourth record, refused both times
    assert len(stored_history(aws["s3"])) == 4

    history = ChampionHistory(ObjectStore(aws["s3"], TEST_BUCKET), max_records=2)
    record_versions(history, range(4, 5))
    assert [r["version"] for r in history.recent()] == ["v4", "v3"]


def test_delete_many_raises_when_s3_refuses_a_key(aws: dict[str, Any]) -> None:
    objects = ObjectStore(CountingS3(aws["s3"], refuse_deletes=True), TEST_BUCKET)
    expected = re.escape("1 of 1 objects not deleted, e.g. models/x: AccessDenied")
    with pytest.raises(ObjectsNotDeletedError, match=expected):
        objects.delete_many(["models/x"])
