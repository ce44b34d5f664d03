"""Whether to retrain now, and why: one pure decision over the status, the settings and the latest signals.

Precedence, first match wins (the reason names the most specific cause):
1. a retrain in progress: never a second one;
2. drift: the latest drift report found drift (DRIFT_THRESHOLD is applied by the detector, with the
   Benjamini-Hochberg correction) and was checked after the last successful retrain, whose model it does not describe;
3. performance: the champion's live quality (recloop.retraining.performance) is worse than its baseline by
   PERFORMANCE_DROP_THRESHOLD (relative), with at least PERFORMANCE_MIN_SAMPLES updates behind the baseline;
   both drift and performance wait, after a retrain, for RETRAIN_MIN_FRESH_INTERACTIONS new interactions: a signal
   that outlived a refused candidate would otherwise retrain every hour on the same data;
4. volume: at least MIN_NEW_INTERACTIONS new interactions since the last successful retrain;
5. schedule: RETRAIN_INTERVAL_HOURS since the last successful retrain (before the first one: since the triggers were
   first evaluated).
A manual retrain is not decided here: a forced request starts one whatever the triggers say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recloop.core.settings import Settings
from recloop.drift.model import DriftReport
from recloop.retraining.model import RetrainStatus, RetrainTrigger
from recloop.retraining.performance import PerformanceReading


@dataclass(frozen=True)
class Decision:
    trigger: RetrainTrigger | None  # None: do not retrain
    reason: str

    @property
    def triggered(self) -> bool:
        return self.trigger is not None


def decide(
    now: datetime,
    status: RetrainStatus,
    settings: Settings,
    latest_drift: DriftReport | None,
    performance: PerformanceReading | None,
) -> Decision:
    if status.retraining_in_progress:
        return Decision(None, f"Retraining already in progress ({status.running_execution})")
    last_retrain = _parse(status.last_retrain_time)
    new = status.new_interactions_since_retrain
    fresh = last_retrain is None or new >= settings.retrain_min_fresh_interactions

    if latest_drift is not None and latest_drift.drifted and fresh:
        checked_at = _parse(latest_drift.checked_at)
        if last_retrain is None or (checked_at is not None and checked_at > last_retrain):
            return Decision(RetrainTrigger.DRIFT, f"Data drift detected (score: {latest_drift.drift_score:.4f})")

    if (
        fresh
        and performance is not None
        and performance.samples >= settings.performance_min_samples
        and performance.relative_drop() >= settings.performance_drop_threshold
    ):
        return Decision(RetrainTrigger.PERFORMANCE, f"Performance degraded ({performance.describe()})")

    if new >= settings.min_new_interactions:
        return Decision(
            RetrainTrigger.VOLUME, f"New interactions threshold reached ({new} >= {settings.min_new_interactions})"
        )

    since = last_retrain or _parse(status.counting_since)
    hours = (now - since).total_seconds() / 3600 if since is not None else None
    if hours is not None and hours >= settings.retrain_interval_hours:
        interval = settings.retrain_interval_hours
        return Decision(
            RetrainTrigger.SCHEDULE,
            f"Scheduled retrain due ({hours:.1f} h since the last retrain, interval {interval:g} h)",
        )

    drift = f"drift score {latest_drift.drift_score:.4f}" if latest_drift is not None else "no drift report"
    elapsed = f"{hours:.1f}/{settings.retrain_interval_hours:g} h" if hours is not None else "schedule not started"
    return Decision(
        None, f"No trigger fired ({drift}, {new}/{settings.min_new_interactions} new interactions, {elapsed})"
    )


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None
