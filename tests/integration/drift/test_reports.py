"""Drift reports over moto S3: one object per run at drift/<run_id>.json, written once, read back newest first
across months."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from recloop.adapters.objects import ObjectStore
from recloop.core.errors import ConflictError
from recloop.drift.features import Source
from recloop.drift.model import DriftReport, new_run_id
from recloop.drift.reports import DriftReportNotFoundError, DriftReports, report_key
from tests.support.environment import TEST_BUCKET


def a_report(at: datetime, score: float = 0.01) -> DriftReport:
    return DriftReport(
        run_id=new_run_id(at),
        checked_at=at.isoformat(timespec="seconds"),
        model_version="v2",
        reference_version="v1",
        threshold=0.05,
        drifted=False,
        drift_score=score,
        drifted_features=[],
        reference_rows={Source.SERVED: 5000, Source.EVENTS: 5000},
        window_rows={Source.SERVED: 1000, Source.EVENTS: 900},
        window_observed={Source.SERVED: 40_000, Source.EVENTS: 900},
        features=[],
    )


@pytest.fixture
def reports(aws: dict[str, Any]) -> DriftReports:
    return DriftReports(ObjectStore(aws["s3"], TEST_BUCKET))


def test_a_report_is_stored_at_its_run_key_and_read_back(reports: DriftReports, aws: dict[str, Any]) -> None:
    report = a_report(datetime(2026, 12, 1, 12, tzinfo=UTC))
    reports.save(report)

    key = f"drift/{report.run_id}.json"
    assert report_key(report.run_id) == key
    stored = json.loads(aws["s3"].get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read())
    assert stored["drift_score"] == 0.01 and stored["window_rows"] == {"served": 1000, "events": 900}
    assert reports.get(report.run_id) == report


def test_a_run_is_written_once(reports: DriftReports) -> None:
    report = a_report(datetime(2026, 12, 1, 12, tzinfo=UTC))
    reports.save(report)
    with pytest.raises(ConflictError):
        reports.save(report.model_copy(update={"drift_score": 0.9}))
    assert reports.get(report.run_id).drift_score == 0.01


def test_unknown_and_malformed_run_ids_are_not_found(reports: DriftReports) -> None:
    for run_id in ("20261201T120000Z-abcdef", "../models/champion", ""):
        with pytest.raises(DriftReportNotFoundError):
            reports.get(run_id)


def test_history_is_newest_first_across_months_and_limited(reports: DriftReports) -> None:
    times = [datetime(2026, month, day, hour, tzinfo=UTC) for month, day, hour in ((10, 30, 9), (11, 2, 1), (12, 1, 5))]
    saved = [a_report(at, score=n / 10) for n, at in enumerate(times)]
    for report in saved:
        reports.save(report)
    now = datetime(2027, 1, 15, tzinfo=UTC)  # nothing this month: the listing walks back

    assert [r.run_id for r in reports.history(10, now)] == [r.run_id for r in reversed(saved)]
    assert [r.run_id for r in reports.history(2, now)] == [saved[2].run_id, saved[1].run_id]
    assert reports.latest(now) == saved[2]


def test_no_reports_is_an_empty_history(reports: DriftReports) -> None:
    assert reports.history(5) == [] and reports.latest() is None


def test_an_unreadable_report_is_left_out(reports: DriftReports, aws: dict[str, Any]) -> None:
    good = a_report(datetime(2026, 12, 1, 12, tzinfo=UTC))
    reports.save(good)
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="drift/20261201T130000Z-000000.json", Body=b"{not json")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="drift/202612-notes.txt", Body=b"not a report")

    assert reports.history(5, datetime(2026, 12, 2, tzinfo=UTC)) == [good]
