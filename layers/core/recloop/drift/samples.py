"""A sample of the monitored features, as the tests read it: numeric values as arrays, categorical ones as counts.

The reference (built at training) and the live window (read back from Redis) both come from rows of the two
streams (`recloop.drift.features`) through `sample_from_rows`, so they are measured the same way: served rows are
float32, as the ranker's feature rows are, and a categorical value of a served row is labelled by its number
("0", "1").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recloop.drift.features import FeatureKind, FeatureSet, Source


@dataclass(frozen=True)
class FeatureSample:
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)

    def size(self, name: str) -> int:
        if name in self.numeric:
            return len(self.numeric[name])
        return sum(self.categorical.get(name, {}).values())


def served_matrix(features: FeatureSet, rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Served rows as a float32 matrix of the served layout (ValueError if a row has the wrong width)."""
    width = len(features.columns(Source.SERVED))
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.size == 0:
        return np.zeros((0, width), dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise ValueError(f"served rows must have {width} columns, got shape {matrix.shape}")
    return matrix


def sample_from_rows(
    features: FeatureSet, served: Sequence[Sequence[float]] | np.ndarray, events: Sequence[Sequence[str]]
) -> FeatureSample:
    """Each feature's values from the rows of its stream. Values that are not finite numbers are left out (a
    numeric feature's NaN has no place in a distribution; a flag's NaN is no label)."""
    matrix = served_matrix(features, served)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, dict[str, int]] = {}
    for column, feature in enumerate(features.of(Source.SERVED)):
        values = matrix[:, column].astype(np.float64)
        values = values[np.isfinite(values)]
        if feature.kind is FeatureKind.NUMERIC:
            numeric[feature.name] = values
        else:
            labels, counts = np.unique(values, return_counts=True)
            categorical[feature.name] = {f"{label:g}": int(count) for label, count in zip(labels, counts, strict=True)}
    width = len(features.columns(Source.EVENTS))
    rows = [row for row in events if len(row) == width]
    for column, feature in enumerate(features.of(Source.EVENTS)):
        if feature.kind is FeatureKind.NUMERIC:
            parsed = np.array([_number(row[column]) for row in rows], dtype=np.float64)
            numeric[feature.name] = parsed[np.isfinite(parsed)]
        else:
            categorical[feature.name] = dict(Counter(str(row[column]) for row in rows))
    return FeatureSample(numeric, categorical)


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")
