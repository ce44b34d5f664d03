"""The two-sample tests of drift detection and the correction over features.

- Numeric: two-sample Kolmogorov-Smirnov (`scipy.stats.ks_2samp`, `method="asymp"`). D is computed exactly with
  ties (both empirical CDFs are evaluated at every observed value), so zeros and repeated counts are fine; the
  p-value assumes continuous data and is conservative under ties (it never overstates the evidence). "asymp"
  (Smirnov's limit at the effective size) rather than "auto": auto switches to the exact distribution below 10,000
  rows, whose cost grows with n*m, and would treat 1,000- and 100,000-row windows differently. At the sizes checked
  (hundreds of rows and up) the two agree to a few percent of the p-value.
- Categorical: chi-square test of homogeneity on the 2 x k table reference vs window (`chi2_contingency`, without
  Yates' correction, which only applies to 2 x 2 tables and would make two-label features stricter than the rest).
  Labels too rare for the chi-square approximation are pooled into one `other` column first.
  Effect: total variation distance between the two label distributions. Not Cramér's V: V of a 2 x k table depends
  on the ratio of the two sample sizes, so the same shift would score differently against a 5,000-row reference
  with a 1,000-row or a 5,000-row window; TVD does not, and is on the scale of KS D (both are the largest gap in
  the probability of some event), so one floor and one drift score read the same for both kinds.
- Benjamini-Hochberg adjusted p-values over the features tested in one check (`false_discovery_control`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# A label stays its own column when both samples would expect at least this many of it (Cochran's rule of thumb).
MIN_EXPECTED_COUNT = 5.0
OTHER_LABEL = "other"


@dataclass(frozen=True)
class Comparison:
    """One feature, reference against window."""

    statistic: float
    p_value: float
    effect: float
    reference_size: int
    window_size: int


def ks_comparison(reference: np.ndarray, window: np.ndarray) -> Comparison:
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, window, method="asymp")
    distance = float(result.statistic)
    return Comparison(distance, float(result.pvalue), distance, len(reference), len(window))


def pooled_table(reference: Mapping[str, int], window: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    """The 2 x k table (reference row, window row) over labels, rare labels pooled into `other`; labels seen in
    neither sample are dropped. Labels are ordered by their combined count, largest first."""
    counts = {label: (reference.get(label, 0), window.get(label, 0)) for label in {*reference, *window}}
    total_reference, total_window = sum(reference.values()), sum(window.values())
    total = total_reference + total_window
    smaller = min(total_reference, total_window)
    kept: dict[str, tuple[int, int]] = {}
    other = [0, 0]
    for label, (in_reference, in_window) in sorted(counts.items(), key=lambda pair: (-sum(pair[1]), pair[0])):
        if in_reference + in_window == 0:
            continue
        if total and smaller * (in_reference + in_window) / total >= MIN_EXPECTED_COUNT:
            kept[label] = (in_reference, in_window)
        else:
            other[0] += in_reference
            other[1] += in_window
    if sum(other):
        key = OTHER_LABEL if OTHER_LABEL not in kept else f"{OTHER_LABEL} (pooled)"
        kept[key] = (other[0], other[1])
    labels = list(kept)
    table = np.array([[kept[label][0] for label in labels], [kept[label][1] for label in labels]], dtype=np.int64)
    return labels, table.reshape(2, len(labels))


def total_variation(table: np.ndarray) -> float:
    """Half the L1 distance between the two rows' label shares."""
    rows = table.sum(axis=1, keepdims=True)
    if (rows == 0).any():
        return 0.0
    shares = table / rows
    return float(0.5 * np.abs(shares[0] - shares[1]).sum())


def chi_square_comparison(reference: Mapping[str, int], window: Mapping[str, int]) -> Comparison:
    """Chi-square homogeneity of the pooled table; one label in both samples is no difference (statistic 0,
    p-value 1)."""
    from scipy.stats import chi2_contingency

    _, table = pooled_table(reference, window)
    sizes = (int(table[0].sum()), int(table[1].sum()))
    if table.shape[1] < 2:
        return Comparison(0.0, 1.0, 0.0, *sizes)
    result = chi2_contingency(table, correction=False)
    return Comparison(float(result.statistic), float(result.pvalue), total_variation(table), *sizes)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Adjusted p-values (step-up, independent or positively dependent tests); empty in, empty out."""
    if not p_values:
        return []
    from scipy.stats import false_discovery_control

    return [float(value) for value in false_discovery_control(np.asarray(p_values, dtype=np.float64), method="bh")]
