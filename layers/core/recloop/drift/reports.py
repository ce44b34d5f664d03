"""Drift reports in S3, one object per check, and the latest ones read back.

    drift/<run_id>.json   one report (recloop.drift.model.DriftReport), written once

Run ids start with the check's UTC time, so S3's lexicographic listing is chronological. The newest reports are
found by listing one month's prefix at a time, from the current month back: a read costs a listing of a month
(about 750 hourly reports), not of the whole history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.core.errors import ConflictError, NotFoundError
from recloop.drift.model import DriftReport, is_run_id

logger = Logger(child=True)

DRIFT_PREFIX = "drift/"
# How many months back the history looks for reports (checks that stopped for longer are not "recent").
LOOKBACK_MONTHS = 13


class DriftReportNotFoundError(NotFoundError):
    code = "drift_report_not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"drift report {run_id!r} does not exist", run_id=run_id)


def report_key(run_id: str) -> str:
    return f"{DRIFT_PREFIX}{run_id}.json"


class DriftReports:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def save(self, report: DriftReport) -> None:
        data = report.model_dump_json().encode()
        if not self.objects.put_if_absent(report_key(report.run_id), data, "application/json"):
            raise ConflictError(f"drift report {report.run_id!r} already exists", run_id=report.run_id)

    def get(self, run_id: str) -> DriftReport:
        # An id that cannot name a report is never looked up (it would be a key of the caller's choosing).
        if not is_run_id(run_id):
            raise DriftReportNotFoundError(run_id)
        stored = self.objects.get(report_key(run_id))
        if stored is None:
            raise DriftReportNotFoundError(run_id)
        return DriftReport.model_validate_json(stored[0])

    def latest(self, now: datetime | None = None) -> DriftReport | None:
        newest = self.history(1, now)
        return newest[0] if newest else None

    def history(self, limit: int = 10, now: datetime | None = None) -> list[DriftReport]:
        """The newest `limit` reports, newest first. One that does not parse is logged and left out."""
        reports: list[DriftReport] = []
        for run_id in self._run_ids_newest_first(now or datetime.now(UTC)):
            if len(reports) >= limit:
                break
            stored = self.objects.get(report_key(run_id))
            if stored is None:
                continue
            try:
                reports.append(DriftReport.model_validate_json(stored[0]))
            except ValidationError as exc:
                logger.error("drift report is unreadable", extra={"run_id": run_id, "error": str(exc)})
        return reports

    def _run_ids_newest_first(self, now: datetime) -> Iterator[str]:
        year, month = now.astimezone(UTC).year, now.astimezone(UTC).month
        for _ in range(LOOKBACK_MONTHS):
            prefix = f"{DRIFT_PREFIX}{year:04d}{month:02d}"
            run_ids = [key[len(DRIFT_PREFIX) :].removesuffix(".json") for key in self.objects.keys(prefix)]
            yield from sorted((run_id for run_id in run_ids if is_run_id(run_id)), reverse=True)
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
