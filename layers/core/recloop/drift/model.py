"""A drift check's report: per feature the test, its statistic, p-value, adjusted p-value, effect and verdict, and the
overall verdict and drift score. Stored as `drift/<run_id>.json` (recloop.drift.reports)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from recloop.drift.features import FeatureKind, Source

# Run ids sort by time: the report listing reads them newest first by name (recloop.drift.reports).
RUN_ID_PATTERN = r"^\d{8}T\d{6}Z-[0-9a-f]{6}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)


def new_run_id(now: datetime | None = None) -> str:
    """``20261201T120000Z-ab12cd``: the check's time (UTC) and a random suffix."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def is_run_id(value: str) -> bool:
    return bool(_RUN_ID.match(value))


class FeatureVerdict(StrEnum):
    DRIFTED = "drifted"  # adjusted p-value below the threshold and effect at least the floor
    BELOW_EFFECT_FLOOR = "below_effect_floor"  # significant, but too small to matter (large samples find trivia)
    STABLE = "stable"
    INSUFFICIENT_DATA = "insufficient_data"  # too few rows in the reference or the window to test
    # Not tested: this check took the window as the served stream's baseline (the reference of the checks after it).
    BASELINE = "baseline"
    NOT_TESTED = "not_tested"  # trends with wall-clock time by construction (recloop.drift.features says why)


TESTED_VERDICTS = frozenset({FeatureVerdict.DRIFTED, FeatureVerdict.BELOW_EFFECT_FLOOR, FeatureVerdict.STABLE})


class FeatureDrift(BaseModel):
    feature: str
    kind: FeatureKind
    source: Source
    test: Literal["kolmogorov_smirnov", "chi_square"]
    effect_measure: Literal["ks_distance", "total_variation"]
    statistic: float | None = Field(description="KS D, or the chi-square statistic; None when not tested")
    p_value: float | None
    adjusted_p_value: float | None = Field(description="Benjamini-Hochberg over the features tested in this check")
    effect: float | None = Field(description="KS D or total variation distance, 0-1")
    effect_floor: float
    reference_size: int
    window_size: int
    verdict: FeatureVerdict


class DriftReport(BaseModel):
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    checked_at: str = Field(description="ISO 8601, UTC")
    model_version: str = Field(description="the version whose traffic the window holds")
    reference_version: str = Field(
        description="the version whose reference sample was compared (itself or an ancestor)"
    )
    threshold: float = Field(description="DRIFT_THRESHOLD, applied to the adjusted p-values")
    correction: Literal["benjamini_hochberg"] = "benjamini_hochberg"
    drifted: bool = Field(description="at least one feature drifted")
    drift_score: float = Field(
        description="the largest effect (KS D or TVD) over the tested features, drifted or not: how far the window is "
        "from the reference on the feature that moved most; 0 when nothing could be tested"
    )
    drifted_features: list[str]
    reference_rows: dict[Source, int] = Field(description="rows of each stream in the reference sample")
    window_rows: dict[Source, int] = Field(description="rows of each stream in the window's sample")
    window_observed: dict[Source, int] = Field(description="rows each stream offered the window since it started")
    served_baseline_taken_at: str | None = Field(
        None,
        description="when the served stream's baseline (its reference: the first full window of the reference "
        "version's lineage's traffic) was taken, ISO 8601 UTC; None while there is none",
    )
    features: list[FeatureDrift]

    @property
    def tested(self) -> bool:
        return any(feature.verdict in TESTED_VERDICTS for feature in self.features)

    def summary(self) -> str:
        """One line for status pages and retrain reasons."""
        if self.drifted:
            return f"Data drift detected (score: {self.drift_score:.4f}; {', '.join(self.drifted_features)})"
        return f"No drift (score: {self.drift_score:.4f})"
