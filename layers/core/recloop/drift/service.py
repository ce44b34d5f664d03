"""The drift check as the system runs it: the champion's lineage's window against its references, the report stored.

    check():   champion -> the version carrying its reference (itself or the nearest ancestor: the lineage root)
               -> the lineage's served window and the events window
               -> served stream: no baseline yet and the window full enough: take it as the baseline (reported
                  `baseline`); else compare with the baseline (recloop.drift.baselines)
               -> events stream: compare with the training reference
               -> DriftDetector -> drift/<run_id>.json -> a new window for the streams that were tested or taken

Starting a new window after each check makes every check compare the traffic since the previous one: a reservoir
that kept filling would dilute a recent shift in weeks of older traffic. A stream too thin to test (or, before the
baseline, to take one) keeps filling until the next check. The served window is the lineage's, not the champion's:
online learning promotes a child every buffer-full, and each child's traffic belongs to the same lineage.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from aws_lambda_powertools import Logger

from recloop.core.errors import NotFoundError
from recloop.drift.baselines import ServedBaselines, compared_reference
from recloop.drift.detector import DriftDetector
from recloop.drift.features import Source
from recloop.drift.model import TESTED_VERDICTS, DriftReport
from recloop.drift.reference import ReferenceStore
from recloop.drift.reports import DriftReports
from recloop.drift.window import DriftWindow
from recloop.registry.model_registry import ModelRegistry

logger = Logger(child=True)


class NoChampionError(NotFoundError):
    code = "no_champion"

    def __init__(self) -> None:
        super().__init__("no model version is the champion: there is no traffic to check for drift")


class DriftService:
    def __init__(
        self,
        registry: ModelRegistry,
        references: ReferenceStore,
        baselines: ServedBaselines,
        window: DriftWindow,
        reports: DriftReports,
        *,
        detector: DriftDetector,
        baseline_rows: int | None = None,
    ) -> None:
        self.registry = registry
        self.references = references
        self.baselines = baselines
        self.window = window
        self.reports = reports
        self.detector = detector
        # A full reservoir by default; never fewer rows than the detector tests on.
        self.baseline_rows = max(baseline_rows or window.capacity, detector.min_rows)

    def check(self, now: datetime | None = None) -> DriftReport:
        """Check the champion's traffic; NoChampionError without a champion, ReferenceNotFoundError when neither it
        nor an ancestor carries a reference."""
        pointer = self.registry.champion(use_cache=False)
        if pointer is None:
            raise NoChampionError()
        reference = self.references.for_version(pointer.version)
        lineage = self.references.reference_version(pointer.version)  # remembered by for_version: no round trip
        window = replace(self.window.sample(lineage), model_version=pointer.version)
        baseline = self.baselines.get(lineage)
        taken: tuple[Source, ...] = ()
        if baseline is None and window.rows[Source.SERVED] >= self.baseline_rows:
            baseline = self.baselines.take(lineage, window, now)
            taken = (Source.SERVED,)
        report = self.detector.check(
            compared_reference(reference, baseline, self.detector.features),
            window,
            now=now,
            baseline_taken=taken,
            served_baseline_taken_at=baseline.created_at if baseline else None,
        )
        self.reports.save(report)
        done = {row.source for row in report.features if row.verdict in TESTED_VERDICTS}
        if done or taken:
            self.window.reset(lineage, done.union(taken))
        logger.info(
            "drift checked",
            extra={
                "run_id": report.run_id,
                "model_version": report.model_version,
                "reference_version": report.reference_version,
                "served_baseline_taken": bool(taken),
                "drifted": report.drifted,
                "drift_score": report.drift_score,
                "drifted_features": report.drifted_features,
            },
        )
        return report

    def latest(self) -> DriftReport | None:
        return self.reports.latest()

    def history(self, limit: int = 10) -> list[DriftReport]:
        return self.reports.history(limit)
