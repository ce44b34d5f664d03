"""The drift check as the system runs it: the champion's reference against the live window, the report stored.

    check():   champion -> its reference (or its nearest ancestor's) -> the window of its traffic and of the
               events -> DriftDetector -> drift/<run_id>.json -> a new window for the streams that were tested

Starting a new window after each check makes every check compare the traffic since the previous one: a reservoir
that kept filling would dilute a recent shift in weeks of older traffic. A stream too thin to test keeps filling
until the next check.
"""

from __future__ import annotations

from datetime import datetime

from aws_lambda_powertools import Logger

from recloop.core.errors import NotFoundError
from recloop.drift.detector import DriftDetector
from recloop.drift.model import DriftReport, FeatureVerdict
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
        window: DriftWindow,
        reports: DriftReports,
        detector: DriftDetector,
    ) -> None:
        self.registry = registry
        self.references = references
        self.window = window
        self.reports = reports
        self.detector = detector

    def check(self, now: datetime | None = None) -> DriftReport:
        """Check the champion's traffic; NoChampionError without a champion, ReferenceNotFoundError when neither it
        nor an ancestor carries a reference."""
        pointer = self.registry.champion(use_cache=False)
        if pointer is None:
            raise NoChampionError()
        reference = self.references.for_version(pointer.version)
        window = self.window.sample(pointer.version)
        report = self.detector.check(reference, window, now=now)
        self.reports.save(report)
        tested = {row.source for row in report.features if row.verdict is not FeatureVerdict.INSUFFICIENT_DATA}
        if tested:
            self.window.reset(pointer.version, tested)
        logger.info(
            "drift checked",
            extra={
                "run_id": report.run_id,
                "model_version": report.model_version,
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
