"""The drift tests against values worked out by hand: KS distance and its asymptotic p-value, chi-square of a 2 x 3
table, total variation, Benjamini-Hochberg; ties, zeros, pooling of rare labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kstwo

from recloop.drift.statistics import (
    OTHER_LABEL,
    benjamini_hochberg,
    chi_square_comparison,
    ks_comparison,
    pooled_table,
    total_variation,
)


def test_ks_distance_of_a_shifted_grid_and_its_asymptotic_p_value() -> None:
    reference = np.arange(100.0)
    window = np.arange(100.0) + 10  # the CDFs are 10 points apart over the overlap: D = 0.10

    result = ks_comparison(reference, window)

    assert result.statistic == pytest.approx(0.10)
    assert result.effect == result.statistic
    # Smirnov's limit at the effective size n*m/(n+m) = 50: the "asymp" method, whatever the sizes.
    assert result.p_value == pytest.approx(kstwo.sf(0.10, 50), rel=1e-12)
    assert (result.reference_size, result.window_size) == (100, 100)


def test_ks_counts_ties_and_zeros_exactly() -> None:
    reference = np.r_[np.zeros(80), np.ones(20)]  # 80% zeros
    window = np.r_[np.zeros(60), np.ones(40)]  # 60% zeros: the CDFs differ by 0.2 at 0 and agree from 1 on

    assert ks_comparison(reference, window).statistic == pytest.approx(0.20)
    same = ks_comparison(reference, reference.copy())
    assert same.statistic == 0.0 and same.p_value == 1.0


def test_chi_square_of_an_event_mix_against_the_hand_computed_statistic() -> None:
    reference = {"view": 600, "click": 300, "like": 100}
    window = {"view": 500, "click": 350, "like": 150}
    # Pooled shares .55/.325/.125, expected 550/325/125 on each side:
    # 2 * (50^2/550 + 25^2/325 + 25^2/125) = 22.937...; with 2 degrees of freedom, p = exp(-statistic / 2).
    expected_statistic = 2 * (50**2 / 550 + 25**2 / 325 + 25**2 / 125)

    result = chi_square_comparison(reference, window)

    assert result.statistic == pytest.approx(expected_statistic)
    assert result.p_value == pytest.approx(math.exp(-expected_statistic / 2))
    assert result.effect == pytest.approx(0.10)  # TVD: (0.10 + 0.05 + 0.05) / 2
    assert (result.reference_size, result.window_size) == (1000, 1000)


def test_two_labels_are_tested_without_yates_correction() -> None:
    # 60/40 against 50/50, 100 rows each: expected 55/45 on each side; Yates would subtract 0.5 from each |O - E|.
    result = chi_square_comparison({"1": 60, "0": 40}, {"1": 50, "0": 50})
    assert result.statistic == pytest.approx(2 * (5**2 / 55 + 5**2 / 45))


def test_total_variation_does_not_depend_on_the_sample_sizes() -> None:
    shares_a, shares_b = np.array([0.6, 0.3, 0.1]), np.array([0.5, 0.35, 0.15])
    small = np.vstack([shares_a * 5000, shares_b * 1000])
    even = np.vstack([shares_a * 5000, shares_b * 5000])
    assert total_variation(small) == pytest.approx(0.10)
    assert total_variation(even) == pytest.approx(0.10)


def test_rare_labels_are_pooled_and_absent_ones_dropped() -> None:
    reference = {"a": 500, "b": 480, "rare1": 2, "rare2": 1, "never": 0}
    window = {"a": 100, "b": 90, "rare1": 1, "new": 2}

    labels, table = pooled_table(reference, window)

    assert labels == ["a", "b", OTHER_LABEL]
    assert table.tolist() == [[500, 480, 3], [100, 90, 3]]


def test_a_frequent_label_new_in_the_window_is_its_own_column() -> None:
    reference, window = {"a": 900, "b": 100}, {"a": 300, "b": 60, "new": 140}
    labels, table = pooled_table(reference, window)
    assert labels == ["a", "b", "new"]  # by combined count
    assert table.tolist() == [[900, 100, 0], [300, 60, 140]]
    assert chi_square_comparison(reference, window).p_value < 1e-10


def test_one_label_on_both_sides_is_no_difference() -> None:
    result = chi_square_comparison({"none": 400}, {"none": 120})
    assert (result.statistic, result.p_value, result.effect) == (0.0, 1.0, 0.0)
    assert (result.reference_size, result.window_size) == (400, 120)


def test_benjamini_hochberg_against_hand_computed_values() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4/rank: 0.02, 0.02, 0.04, 0.04 (already monotone).
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # Step-up: 0.03 * 3/2 = 0.045 is lowered to the next adjusted value, min(0.045, 0.04 * 3/3) = 0.04.
    assert benjamini_hochberg([0.001, 0.03, 0.04]) == pytest.approx([0.003, 0.04, 0.04])
    assert benjamini_hochberg([0.5]) == [0.5]
    assert benjamini_hochberg([]) == []
