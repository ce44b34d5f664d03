"""The drift check: every monitored feature, reference against window, corrected over features, into a report.

A feature drifts when its Benjamini-Hochberg adjusted p-value is below DRIFT_THRESHOLD and its effect reaches its
floor (recloop.drift.features explains the floors). The p-values are adjusted over the features that could be
tested: one with too few rows on either side is reported `insufficient_data` and takes no part in the correction.
Neither do a feature that trends by construction (`not_tested`) nor the features of a stream whose window the
check takes as that stream's baseline (`baseline`, recloop.drift.baselines).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from recloop.drift.features import MONITORED_FEATURES, FeatureKind, FeatureSet, MonitoredFeature, Source
from recloop.drift.model import DriftReport, FeatureDrift, FeatureVerdict, new_run_id
from recloop.drift.reference import ReferenceSample
from recloop.drift.samples import FeatureSample
from recloop.drift.statistics import Comparison, benjamini_hochberg, chi_square_comparison, ks_comparison
from recloop.drift.window import WindowSample

# Below this many rows on either side a feature is not tested: the asymptotic tests need a sample to be asymptotic.
MIN_ROWS = 100


class DriftDetector:
    def __init__(self, features: FeatureSet = MONITORED_FEATURES, threshold: float = 0.05, min_rows: int = MIN_ROWS):
        if not 0 < threshold < 1:
            raise ValueError("the drift threshold is a p-value level, between 0 and 1")
        self.features = features
        self.threshold = threshold
        self.min_rows = max(2, min_rows)

    def check(
        self,
        reference: ReferenceSample,
        window: WindowSample,
        *,
        run_id: str | None = None,
        now: datetime | None = None,
        baseline_taken: Collection[Source] = (),
        served_baseline_taken_at: str | None = None,
    ) -> DriftReport:
        """`baseline_taken`: the streams whose window this check takes as their baseline, reported, not tested."""
        now = now or datetime.now(UTC)
        untested = {
            feature.name: FeatureVerdict.BASELINE if feature.source in baseline_taken else FeatureVerdict.NOT_TESTED
            for feature in self.features
            if feature.source in baseline_taken or not feature.tested
        }
        comparisons = {
            feature.name: None if feature.name in untested else self._compare(feature, reference.sample, window.sample)
            for feature in self.features
        }
        tested = {name: comparison for name, comparison in comparisons.items() if comparison is not None}
        adjusted = dict(zip(tested, benjamini_hochberg([c.p_value for c in tested.values()]), strict=True))
        rows = [
            self._row(
                feature,
                reference.sample,
                window.sample,
                comparisons[feature.name],
                adjusted.get(feature.name),
                verdict_if_untested=untested.get(feature.name, FeatureVerdict.INSUFFICIENT_DATA),
            )
            for feature in self.features
        ]
        drifted = [row.feature for row in rows if row.verdict is FeatureVerdict.DRIFTED]
        return DriftReport(
            run_id=run_id or new_run_id(now),
            checked_at=now.astimezone(UTC).isoformat(timespec="seconds"),
            model_version=window.model_version,
            reference_version=reference.version,
            threshold=self.threshold,
            drifted=bool(drifted),
            drift_score=round(max((row.effect for row in rows if row.effect is not None), default=0.0), 6),
            drifted_features=drifted,
            reference_rows=reference.rows,
            window_rows=window.rows,
            window_observed=window.observed,
            served_baseline_taken_at=served_baseline_taken_at,
            features=rows,
        )

    def _compare(self, feature: MonitoredFeature, reference: FeatureSample, window: FeatureSample) -> Comparison | None:
        if min(reference.size(feature.name), window.size(feature.name)) < self.min_rows:
            return None
        if feature.kind is FeatureKind.NUMERIC:
            return ks_comparison(reference.numeric[feature.name], window.numeric[feature.name])
        return chi_square_comparison(reference.categorical[feature.name], window.categorical[feature.name])

    def _row(
        self,
        feature: MonitoredFeature,
        reference: FeatureSample,
        window: FeatureSample,
        comparison: Comparison | None,
        adjusted_p_value: float | None,
        *,
        verdict_if_untested: FeatureVerdict,
    ) -> FeatureDrift:
        numeric = feature.kind is FeatureKind.NUMERIC
        common = {
            "feature": feature.name,
            "kind": feature.kind,
            "source": feature.source,
            "test": "kolmogorov_smirnov" if numeric else "chi_square",
            "effect_measure": "ks_distance" if numeric else "total_variation",
            "effect_floor": feature.effect_floor,
        }
        if comparison is None or adjusted_p_value is None:
            return FeatureDrift(
                **common,
                statistic=None,
                p_value=None,
                adjusted_p_value=None,
                effect=None,
                reference_size=reference.size(feature.name),
                window_size=window.size(feature.name),
                verdict=verdict_if_untested,
            )
        significant = adjusted_p_value < self.threshold
        if significant and comparison.effect >= feature.effect_floor:
            verdict = FeatureVerdict.DRIFTED
        elif significant:
            verdict = FeatureVerdict.BELOW_EFFECT_FLOOR
        else:
            verdict = FeatureVerdict.STABLE
        return FeatureDrift(
            **common,
            statistic=comparison.statistic,
            p_value=comparison.p_value,
            adjusted_p_value=adjusted_p_value,
            effect=comparison.effect,
            reference_size=comparison.reference_size,
            window_size=comparison.window_size,
            verdict=verdict,
        )
