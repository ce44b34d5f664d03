"""The retrain decision: each trigger, its boundary, its reason, and the precedence between them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recloop.core.settings import Settings
from recloop.retraining.model import RetrainMetrics, RetrainStatus, RetrainTrigger
from recloop.retraining.performance import PerformanceReading
from recloop.retraining.triggers import decide
from tests.support.retraining import drift_report

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings.model_validate(
    {
        "MIN_NEW_INTERACTIONS": 1000,
        "RETRAIN_INTERVAL_HOURS": 168,
        "PERFORMANCE_DROP_THRESHOLD": 0.2,
        "PERFORMANCE_MIN_SAMPLES": 5,
        "RETRAIN_MIN_FRESH_INTERACTIONS": 200,
    }
)


def status(
    *,
    in_progress: str | None = None,
    last_retrain: datetime | None = NOW - timedelta(hours=1),
    new: int = 200,
    counting_since: datetime | None = None,
) -> RetrainStatus:
    return RetrainStatus(
        retraining_in_progress=in_progress is not None,
        running_execution=in_progress,
        last_retrain_time=last_retrain.isoformat(timespec="seconds") if last_retrain else None,
        new_interactions_since_retrain=new,
        last_drift_score=None,
        counting_since=counting_since.isoformat(timespec="seconds") if counting_since else None,
        metrics=RetrainMetrics(),
        last_run=None,
    )


def drift(drifted: bool = True, score: float = 0.0234, checked_at: datetime = NOW - timedelta(minutes=5)):
    return drift_report(checked_at, drifted=drifted, score=score)


def error(current: float, baseline: float = 0.5, samples: int = 5) -> PerformanceReading:
    return PerformanceReading(
        metric="online_held_out_error", current=current, baseline=baseline, samples=samples, higher_is_better=False
    )


def test_drift_gives_the_guides_reason() -> None:
    decision = decide(NOW, status(), SETTINGS, drift(score=0.0234), None)
    assert decision.trigger is RetrainTrigger.DRIFT
    assert decision.triggered
    assert decision.reason == "Data drift detected (score: 0.0234)"


def test_no_drift_does_not_trigger() -> None:
    decision = decide(NOW, status(), SETTINGS, drift(drifted=False, score=0.01), None)
    assert not decision.triggered
    assert decision.trigger is None
    assert decision.reason == "No trigger fired (drift score 0.0100, 200/1000 new interactions, 1.0/168 h)"


def test_a_drift_report_older_than_the_last_retrain_does_not_trigger() -> None:
    """It describes the traffic of the model the retrain replaced."""
    before = drift(checked_at=NOW - timedelta(hours=2))
    assert not decide(NOW, status(last_retrain=NOW - timedelta(hours=1)), SETTINGS, before, None).triggered
    assert decide(NOW, status(last_retrain=None), SETTINGS, before, None).trigger is RetrainTrigger.DRIFT


@pytest.mark.parametrize(
    ("reading", "fires"),
    [
        (error(0.6), True),  # exactly 20% worse
        (error(0.59), False),
        (error(0.8, samples=4), False),  # too few updates behind the baseline
        (error(0.3), False),  # better
        (error(0.8, baseline=0.0), False),  # no baseline to compare
    ],
)
def test_performance_fires_at_the_relative_drop_with_enough_samples(reading: PerformanceReading, fires: bool) -> None:
    decision = decide(NOW, status(), SETTINGS, None, reading)
    assert (decision.trigger is RetrainTrigger.PERFORMANCE) is fires


def test_performance_reason_names_the_metric_and_both_values() -> None:
    decision = decide(NOW, status(), SETTINGS, None, error(0.75))
    assert decision.reason == "Performance degraded (online_held_out_error 0.7500 vs baseline 0.5000, 50% worse)"


def test_a_falling_hit_rate_is_a_drop_too() -> None:
    hit_rate = PerformanceReading(metric="hit_rate", current=0.08, baseline=0.1, samples=500, higher_is_better=True)
    assert decide(NOW, status(), SETTINGS, None, hit_rate).trigger is RetrainTrigger.PERFORMANCE
    assert hit_rate.relative_drop() == pytest.approx(0.2)


@pytest.mark.parametrize(("new", "fires"), [(999, False), (1000, True), (25_000, True)])
def test_volume_fires_at_min_new_interactions(new: int, fires: bool) -> None:
    decision = decide(NOW, status(new=new), SETTINGS, None, None)
    assert (decision.trigger is RetrainTrigger.VOLUME) is fires
    if fires:
        assert decision.reason == f"New interactions threshold reached ({new} >= 1000)"


@pytest.mark.parametrize(("hours", "fires"), [(167.9, False), (168, True), (500, True)])
def test_schedule_fires_after_the_interval(hours: float, fires: bool) -> None:
    decision = decide(NOW, status(last_retrain=NOW - timedelta(hours=hours)), SETTINGS, None, None)
    assert (decision.trigger is RetrainTrigger.SCHEDULE) is fires
    if fires:
        assert decision.reason == f"Scheduled retrain due ({hours:.1f} h since the last retrain, interval 168 h)"


def test_before_any_retrain_the_schedule_counts_from_the_first_evaluation() -> None:
    never = status(last_retrain=None, counting_since=NOW - timedelta(hours=170))
    assert decide(NOW, never, SETTINGS, None, None).trigger is RetrainTrigger.SCHEDULE
    fresh = status(last_retrain=None, counting_since=NOW - timedelta(hours=2))
    assert not decide(NOW, fresh, SETTINGS, None, None).triggered
    unknown = decide(NOW, status(last_retrain=None), SETTINGS, None, None)
    assert unknown.reason == "No trigger fired (no drift report, 200/1000 new interactions, schedule not started)"


def test_a_retrain_in_progress_blocks_every_trigger() -> None:
    running = status(in_progress="retrain-drift-20261201T1100Z", new=50_000, last_retrain=NOW - timedelta(days=30))
    decision = decide(NOW, running, SETTINGS, drift(), error(0.9))
    assert not decision.triggered
    assert decision.reason == "Retraining already in progress (retrain-drift-20261201T1100Z)"


def test_precedence_is_drift_performance_volume_schedule() -> None:
    every = status(new=50_000, last_retrain=NOW - timedelta(days=30))
    stale_drift = drift(checked_at=NOW - timedelta(days=31))  # before the last retrain: not a trigger
    assert decide(NOW, every, SETTINGS, drift(), error(0.9)).trigger is RetrainTrigger.DRIFT
    assert decide(NOW, every, SETTINGS, stale_drift, error(0.9)).trigger is RetrainTrigger.PERFORMANCE
    assert decide(NOW, every, SETTINGS, None, error(0.5)).trigger is RetrainTrigger.VOLUME
    assert decide(NOW, status(new=10, last_retrain=NOW - timedelta(days=30)), SETTINGS, None, None).trigger is (
        RetrainTrigger.SCHEDULE
    )


def test_after_a_retrain_drift_and_performance_wait_for_fresh_interactions() -> None:
    """A drift that outlived a refused candidate does not retrain again on the same data every hour."""
    stale = status(new=199)
    assert not decide(NOW, stale, SETTINGS, drift(), error(0.9)).triggered
    assert decide(NOW, status(new=200), SETTINGS, drift(), None).trigger is RetrainTrigger.DRIFT
    assert decide(NOW, status(new=200), SETTINGS, None, error(0.9)).trigger is RetrainTrigger.PERFORMANCE
    # Before any retrain there is nothing to wait for.
    assert decide(NOW, status(new=0, last_retrain=None), SETTINGS, drift(), None).trigger is RetrainTrigger.DRIFT
