"""The decision rule, the posterior, the intervals and the sample-ratio-mismatch check."""

from __future__ import annotations

import math
import random

import pytest

from recloop.core.settings import AllocationStrategy
from recloop.experiments.counters import ArmCounts
from recloop.experiments.model import Experiment, Guardrails, Variant
from recloop.experiments.statistics import (
    ALPHA,
    MINIMUM_RELATIVE_LIFT,
    PLANNED_POWER_Z,
    chi_square_survival,
    evaluate,
    pair_p_value,
    planned_impressions,
    posterior_probability_best,
    srm_p_value,
)


def make_experiment(
    strategy: AllocationStrategy = AllocationStrategy.FIXED_SPLIT,
    weights: list[float | None] | None = None,
    guardrails: Guardrails | None = None,
) -> Experiment:
    weights = weights or [None, None]
    return Experiment(
        experiment_id="exp_000000000001",
        name="test",
        variants=[
            Variant(variant_id=f"var_{n}", name=f"arm{n}", model_version=f"v{n}", weight=weight)
            for n, weight in enumerate(weights)
        ],
        allocation_strategy=strategy,
        traffic_percentage=100,
        guardrails=guardrails or Guardrails(),
    )


def arm(impressions: int, conversions: int, p95: float | None = 20.0) -> ArmCounts:
    return ArmCounts(
        impressions=impressions,
        conversions=conversions,
        negatives=0,
        latency_ms_sum=20.0 * impressions,
        latency_p95_ms=p95,
    )


@pytest.mark.parametrize(
    ("statistic", "dof", "expected"),
    [
        (3.841458820694124, 1, 0.05),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (13.815510557964274, 2, 0.001),
        (7.814727903251178, 3, 0.05),
        (2.0, 5, 0.8491450360846096),
        (30.0, 20, 0.06985366069940346),
        (100.0, 10, 5.449700029786295e-17),
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_survival_matches_known_values(statistic: float, dof: int, expected: float) -> None:
    assert chi_square_survival(statistic, dof) == pytest.approx(expected, rel=1e-6)


def test_two_arm_probability_best_is_the_exact_posterior_probability() -> None:
    arms = [arm(1000, 50), arm(1000, 60)]
    exact = posterior_probability_best(arms)
    rng = random.Random(3)
    draws = 100_000
    wins = sum(rng.betavariate(61, 941) > rng.betavariate(51, 951) for _ in range(draws))
    assert exact[1] == pytest.approx(wins / draws, abs=0.006)
    assert sum(exact) == pytest.approx(1.0)
    assert posterior_probability_best([arm(500, 25), arm(500, 25)])[0] == pytest.approx(0.5, abs=1e-9)


def test_probability_best_of_three_arms_is_reproducible_and_sums_to_one() -> None:
    arms = [arm(2000, 100), arm(2000, 130), arm(2000, 90)]
    first, second = posterior_probability_best(arms), posterior_probability_best(arms)
    assert first == second
    assert sum(first) == pytest.approx(1.0)
    assert first[1] > 0.9 > first[0] > first[2]


def test_equal_rates_are_never_significant_and_a_clear_lift_is() -> None:
    assert pair_p_value(arm(20_000, 1000), arm(20_000, 1000), 0.05) == 1.0
    assert pair_p_value(arm(20_000, 1200), arm(20_000, 1000), 0.055) < 0.01


def test_a_clear_lift_is_declared_winner_with_confidence() -> None:
    verdict = evaluate(make_experiment(), {"arm0": arm(20_000, 1000), "arm1": arm(20_000, 1250)})
    assert verdict.decided and verdict.winning_variant == "arm1"
    assert verdict.confidence > 0.95
    assert verdict.arms[1].probability_best > 0.99
    assert verdict.arms[1].interval_low < 1250 / 20_000 < verdict.arms[1].interval_high


def test_a_small_sample_with_a_lift_is_not_decided_yet() -> None:
    verdict = evaluate(make_experiment(), {"arm0": arm(3000, 150), "arm1": arm(3000, 175)})
    assert not verdict.decided and verdict.winning_variant is None
    assert verdict.confidence < 0.95


def test_p_best_above_095_alone_does_not_decide() -> None:
    counts = {"arm0": arm(6000, 300), "arm1": arm(6000, 345)}
    verdict = evaluate(make_experiment(), counts)
    assert verdict.arms[1].probability_best > 0.95
    assert not verdict.decided


def test_minimum_conversions_guardrail_blocks_a_decision() -> None:
    strict = make_experiment(guardrails=Guardrails(min_conversions_per_arm=2000))
    verdict = evaluate(strict, {"arm0": arm(20_000, 1000), "arm1": arm(20_000, 1250)})
    assert not verdict.decided and "2000 conversions" in verdict.reason


def test_latency_guardrail_blocks_a_slow_challenger() -> None:
    counts = {"arm0": arm(20_000, 1000, p95=20.0), "arm1": arm(20_000, 1250, p95=31.0)}
    verdict = evaluate(make_experiment(), counts)
    assert not verdict.decided and "latency" in verdict.reason
    counts["arm1"] = arm(20_000, 1250, p95=29.0)
    assert evaluate(make_experiment(), counts).decided


def test_control_can_win() -> None:
    verdict = evaluate(make_experiment(), {"arm0": arm(20_000, 1250), "arm1": arm(20_000, 1000)})
    assert verdict.winning_variant == "arm0"


def test_sample_ratio_mismatch_is_flagged_and_blocks_the_decision() -> None:
    verdict = evaluate(make_experiment(), {"arm0": arm(21_000, 1000), "arm1": arm(19_000, 1250)})
    assert verdict.srm_flagged and verdict.srm_p_value < 0.001
    assert not verdict.decided and "sample ratio mismatch" in verdict.reason


def test_srm_uses_the_weights_and_only_fixed_splits() -> None:
    weighted = make_experiment(weights=[0.8, 0.2])
    assert srm_p_value(weighted, [arm(8000, 0), arm(2000, 0)]) == pytest.approx(1.0)
    assert srm_p_value(weighted, [arm(5000, 0), arm(5000, 0)]) < 1e-10
    bandit = make_experiment(strategy=AllocationStrategy.THOMPSON_SAMPLING)
    verdict = evaluate(bandit, {"arm0": arm(30_000, 1500), "arm1": arm(5000, 250)})
    assert verdict.srm_p_value is None and not verdict.srm_flagged


def test_srm_of_three_arms_uses_two_degrees_of_freedom() -> None:
    counts = [arm(1000, 0), arm(1000, 0), arm(1100, 0)]
    statistic = sum((c.impressions - 3100 / 3) ** 2 / (3100 / 3) for c in counts)
    expected = math.exp(-statistic / 2)  # chi-square(2) survival
    assert srm_p_value(make_experiment(weights=[None, None, None]), counts) == pytest.approx(expected, rel=1e-9)


def test_an_experiment_without_data_reports_empty_arms() -> None:
    verdict = evaluate(make_experiment(), {})
    assert not verdict.decided
    assert [result.impressions for result in verdict.arms] == [0, 0]
    assert verdict.arms[0].avg_latency_ms is None
    assert verdict.confidence == 0.0


def test_the_plan_is_where_a_balanced_split_finds_the_minimum_lift_with_80_percent_power() -> None:
    """At the planned impressions, an estimate PLANNED_POWER_Z standard errors below the minimum lift is exactly
    significant: the true minimum lift is found there with 80% power."""
    rate = 0.05
    per_arm = planned_impressions([ArmCounts(impressions=1000, conversions=50)] * 2) / 2
    lift = MINIMUM_RELATIVE_LIFT * rate
    estimate = lift - PLANNED_POWER_Z * math.sqrt(2 * rate * (1 - rate) / per_arm)
    control = ArmCounts(impressions=round(per_arm), conversions=round(per_arm * (rate - estimate / 2)))
    challenger = ArmCounts(impressions=round(per_arm), conversions=round(per_arm * (rate + estimate / 2)))
    assert pair_p_value(challenger, control, rate) == pytest.approx(ALPHA, rel=0.05)


def test_the_plan_grows_with_rarer_conversions_and_more_arms_and_waits_for_a_first_conversion() -> None:
    common, rare = ArmCounts(impressions=1000, conversions=100), ArmCounts(impressions=1000, conversions=10)
    assert planned_impressions([rare] * 2) > 5 * planned_impressions([common] * 2)
    assert planned_impressions([common] * 3) > 1.5 * planned_impressions([common] * 2)  # Bonferroni over 3 pairs
    assert planned_impressions([ArmCounts(impressions=1000)] * 2) == math.inf
