"""A drift report as the retraining triggers read it (only its verdict, score and time matter to them)."""

from __future__ import annotations

from datetime import datetime

from recloop.drift.features import Source
from recloop.drift.model import DriftReport, new_run_id


def drift_report(checked_at: datetime, *, drifted: bool = True, score: float = 0.0234) -> DriftReport:
    return DriftReport(
        run_id=new_run_id(checked_at),
        checked_at=checked_at.isoformat(timespec="seconds"),
        model_version="v2",
        reference_version="v2",
        threshold=0.05,
        drifted=drifted,
        drift_score=score,
        drifted_features=["score"] if drifted else [],
        reference_rows={Source.SERVED: 5000},
        window_rows={Source.SERVED: 1000},
        window_observed={Source.SERVED: 1000},
        features=[],
    )
