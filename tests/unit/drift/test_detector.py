"""DriftDetector: verdicts from adjusted p-values and effect floors, the correction over tested features only,
the drift score, and the report's shape."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from recloop.drift.detector import DriftDetector
from recloop.drift.features import MONITORED_FEATURES, FeatureKind, FeatureSet, MonitoredFeature, Source
from recloop.drift.model import DriftReport, FeatureVerdict, is_run_id
from recloop.drift.reference import ReferenceSample
from recloop.drift.samples import FeatureSample
from recloop.drift.statistics import benjamini_hochberg
from recloop.drift.window import WindowSample

FEATURES = FeatureSet(
    (
        MonitoredFeature(name="score", kind=FeatureKind.NUMERIC, source=Source.SERVED, effect_floor=0.07),
        MonitoredFeature(name="age", kind=FeatureKind.NUMERIC, source=Source.SERVED, effect_floor=0.07),
        MonitoredFeature(name="event_type", kind=FeatureKind.CATEGORICAL, source=Source.EVENTS, effect_floor=0.06),
    )
)
MIX = ("view", "click", "like")


def sample(rng: np.random.Generator, rows: int, *, shift: float = 0.0, mix=(0.6, 0.3, 0.1)) -> FeatureSample:
    types = rng.choice(MIX, size=rows, p=mix)
    return FeatureSample(
        numeric={"score": rng.normal(shift, 1.0, rows), "age": rng.exponential(3.0, rows)},
        categorical={"event_type": {label: int((types == label).sum()) for label in MIX}},
    )


def reference(fs: FeatureSample, rows: int) -> ReferenceSample:
    return ReferenceSample("v1", "2026-12-01T00:00:00+00:00", {Source.SERVED: rows, Source.EVENTS: rows}, fs)


def window(fs: FeatureSample, rows: int) -> WindowSample:
    sizes = {Source.SERVED: rows, Source.EVENTS: rows}
    return WindowSample("v2", fs, sizes, {Source.SERVED: rows * 3, Source.EVENTS: rows * 3})


def by_name(report: DriftReport) -> dict:
    return {row.feature: row for row in report.features}


def test_a_mean_shift_drifts_that_feature_only() -> None:
    rng = np.random.default_rng(1)
    report = DriftDetector(FEATURES).check(
        reference(sample(rng, 5000), 5000), window(sample(rng, 1000, shift=0.5), 1000)
    )
    rows = by_name(report)
    assert report.drifted and report.drifted_features == ["score"]
    assert rows["score"].verdict is FeatureVerdict.DRIFTED
    assert rows["score"].adjusted_p_value < 0.05 <= rows["age"].adjusted_p_value
    assert rows["age"].verdict is FeatureVerdict.STABLE and rows["event_type"].verdict is FeatureVerdict.STABLE
    assert report.drift_score == pytest.approx(rows["score"].effect, abs=1e-6)
    assert report.summary().startswith("Data drift detected (score: ")


def test_an_event_mix_shift_drifts_the_categorical_feature() -> None:
    rng = np.random.default_rng(2)
    report = DriftDetector(FEATURES).check(
        reference(sample(rng, 5000), 5000), window(sample(rng, 1000, mix=(0.5, 0.35, 0.15)), 1000)
    )
    row = by_name(report)["event_type"]
    assert report.drifted_features == ["event_type"]
    assert row.test == "chi_square" and row.effect_measure == "total_variation"
    assert row.effect == pytest.approx(0.10, abs=0.03)


def test_a_significant_shift_below_the_floor_is_not_drift() -> None:
    """100,000 rows a side find a 0.05 sd shift (p ~ 0), but D ~ 0.02 is below the 0.07 floor."""
    rng = np.random.default_rng(3)
    report = DriftDetector(FEATURES).check(
        reference(sample(rng, 100_000), 100_000), window(sample(rng, 100_000, shift=0.05), 100_000)
    )
    row = by_name(report)["score"]
    assert row.adjusted_p_value < 1e-6 and row.effect < 0.07
    assert row.verdict is FeatureVerdict.BELOW_EFFECT_FLOOR
    assert not report.drifted and report.drifted_features == []


def test_the_threshold_applies_to_the_adjusted_p_values() -> None:
    rng = np.random.default_rng(4)
    ref, win = reference(sample(rng, 5000), 5000), window(sample(rng, 1000, shift=0.2), 1000)
    adjusted = by_name(DriftDetector(FEATURES).check(ref, win))["score"].adjusted_p_value
    assert DriftDetector(FEATURES, threshold=adjusted * 0.99).check(ref, win).drifted is False
    assert DriftDetector(FEATURES, threshold=min(0.99, adjusted * 1.01)).check(ref, win).drifted is True


def test_features_with_too_few_rows_are_not_tested_nor_counted_in_the_correction() -> None:
    rng = np.random.default_rng(5)
    thin = sample(rng, 1000, shift=0.3)
    thin.categorical["event_type"] = {"view": 30, "click": 10}  # 40 events: too few to test
    report = DriftDetector(FEATURES).check(reference(sample(rng, 5000), 5000), window(thin, 1000))
    rows = by_name(report)
    skipped = rows["event_type"]
    assert skipped.verdict is FeatureVerdict.INSUFFICIENT_DATA
    assert (skipped.statistic, skipped.p_value, skipped.adjusted_p_value, skipped.effect) == (None,) * 4
    assert (skipped.reference_size, skipped.window_size) == (5000, 40)
    tested = [rows["score"].p_value, rows["age"].p_value]
    assert [rows["score"].adjusted_p_value, rows["age"].adjusted_p_value] == pytest.approx(benjamini_hochberg(tested))


def test_nothing_to_test_is_no_drift_with_score_zero() -> None:
    empty = FeatureSample({"score": np.array([]), "age": np.array([])}, {"event_type": {}})
    rng = np.random.default_rng(6)
    report = DriftDetector(FEATURES).check(reference(sample(rng, 5000), 5000), window(empty, 0))
    assert not report.drifted and report.drift_score == 0.0 and not report.tested
    assert {row.verdict for row in report.features} == {FeatureVerdict.INSUFFICIENT_DATA}


def test_the_report_names_its_run_versions_sizes_and_every_monitored_feature() -> None:
    rng = np.random.default_rng(7)
    columns = MONITORED_FEATURES
    numeric = {f.name: rng.gamma(2.0, 1.0, 600) for f in columns if f.kind is FeatureKind.NUMERIC}
    categorical = {f.name: {"0": 300, "1": 300} for f in columns if f.kind is FeatureKind.CATEGORICAL}
    fs = FeatureSample(numeric, categorical)
    checked = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    report = DriftDetector().check(reference(fs, 600), window(fs, 600), now=checked)

    assert is_run_id(report.run_id) and report.run_id.startswith("20261201T120000Z-")
    assert report.checked_at == "2026-12-01T12:00:00+00:00"
    assert (report.model_version, report.reference_version, report.threshold) == ("v2", "v1", 0.05)
    assert [row.feature for row in report.features] == [f.name for f in MONITORED_FEATURES]
    assert report.window_observed == {Source.SERVED: 1800, Source.EVENTS: 1800}
    assert not report.drifted and report.drift_score == 0.0  # identical samples
    stored = DriftReport.model_validate_json(report.model_dump_json())
    assert stored == report


def test_a_stream_taken_as_baseline_and_trending_features_are_reported_not_tested() -> None:
    trending = MonitoredFeature(
        name="age",
        kind=FeatureKind.NUMERIC,
        source=Source.SERVED,
        effect_floor=0.07,
        untested_because="grows with wall-clock time",
    )
    features = FeatureSet((*[f for f in FEATURES if f.name != "age"], trending))
    rng = np.random.default_rng(8)
    ref = reference(sample(rng, 5000), 5000)
    shifted = sample(rng, 1000, shift=1.0)
    shifted.numeric["age"] = shifted.numeric["age"] + 30  # a month older: far off, yet not tested

    report = DriftDetector(features).check(ref, window(shifted, 1000))
    rows = by_name(report)
    assert rows["age"].verdict is FeatureVerdict.NOT_TESTED and rows["age"].effect is None
    assert report.drifted_features == ["score"]

    taken = DriftDetector(features).check(
        ref, window(shifted, 1000), baseline_taken=[Source.SERVED], served_baseline_taken_at="2026-12-01T12:00:00+00:00"
    )
    rows = by_name(taken)
    assert rows["score"].verdict is FeatureVerdict.BASELINE and rows["score"].adjusted_p_value is None
    assert rows["age"].verdict is FeatureVerdict.BASELINE  # the stream's every feature: its window is the baseline
    assert rows["event_type"].verdict is FeatureVerdict.STABLE
    # The correction runs over the one feature tested: its adjusted p-value is its p-value.
    assert rows["event_type"].adjusted_p_value == pytest.approx(rows["event_type"].p_value)
    assert not taken.drifted and taken.tested and taken.drift_score == pytest.approx(rows["event_type"].effect)
    assert taken.served_baseline_taken_at == "2026-12-01T12:00:00+00:00"


def test_a_threshold_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DriftDetector(threshold=1.5)
