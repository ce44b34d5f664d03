"""Entry by hash, sticky weighted splits, and the bandits' burn-in, floor share and exploitation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from recloop.core.settings import AllocationStrategy
from recloop.experiments.allocation import (
    BURN_IN_IMPRESSIONS,
    FLOOR_SHARE,
    choose_variant,
    in_experiment,
    thompson_floor_share,
    unit_hash,
)
from recloop.experiments.counters import ArmCounts
from recloop.experiments.model import Experiment, ExperimentStatus, Rollout, RolloutStage, Variant
from recloop.experiments.statistics import chi_square_survival, planned_impressions


def make_experiment(
    strategy: AllocationStrategy, weights: list[float | None] | None = None, traffic: float = 100, epsilon: float = 0.1
) -> Experiment:
    weights = weights or [None, None]
    return Experiment(
        experiment_id="exp_000000000002",
        name="test",
        variants=[
            Variant(variant_id=f"var_{n}", name=f"arm{n}", model_version=f"v{n}", weight=weight)
            for n, weight in enumerate(weights)
        ],
        allocation_strategy=strategy,
        traffic_percentage=traffic,
        epsilon=epsilon,
        salt="fixed-salt",
    )


def test_hash_is_uniform_over_100k_ids() -> None:
    bins = 20
    counts = Counter(int(unit_hash(f"salt:user{n}") * bins) for n in range(100_000))
    expected = 100_000 / bins
    statistic = sum((counts[b] - expected) ** 2 / expected for b in range(bins))
    assert chi_square_survival(statistic, bins - 1) > 0.001


def test_traffic_percentage_admits_that_share_of_users() -> None:
    experiment = make_experiment(AllocationStrategy.FIXED_SPLIT, traffic=30)
    admitted = sum(in_experiment(experiment, f"user{n}") for n in range(20_000))
    assert admitted / 20_000 == pytest.approx(0.30, abs=0.015)
    assert not any(
        in_experiment(make_experiment(AllocationStrategy.FIXED_SPLIT, traffic=0), f"u{n}") for n in range(99)
    )


def test_fixed_split_is_sticky_and_follows_the_weights() -> None:
    experiment = make_experiment(AllocationStrategy.FIXED_SPLIT, weights=[0.7, 0.3])
    rng = random.Random(1)
    first = [choose_variant(experiment, f"user{n}", {}, rng).name for n in range(20_000)]
    again = [choose_variant(experiment, f"user{n}", {}, rng).name for n in range(20_000)]
    assert first == again
    assert first.count("arm0") / 20_000 == pytest.approx(0.7, abs=0.015)


def test_fixed_split_inside_a_partial_traffic_is_still_even() -> None:
    experiment = make_experiment(AllocationStrategy.FIXED_SPLIT, traffic=20)
    rng = random.Random(1)
    users = [f"user{n}" for n in range(50_000) if in_experiment(experiment, f"user{n}")]
    shares = Counter(choose_variant(experiment, user, {}, rng).name for user in users)
    assert shares["arm0"] / len(users) == pytest.approx(0.5, abs=0.02)


def shares(experiment: Experiment, counts: dict[str, ArmCounts], requests: int = 20_000) -> dict[str, float]:
    rng = random.Random(7)
    chosen = Counter(choose_variant(experiment, f"u{n}", counts, rng).name for n in range(requests))
    return {name: chosen[name] / requests for name in ("arm0", "arm1")}


@pytest.mark.parametrize("strategy", [AllocationStrategy.THOMPSON_SAMPLING, AllocationStrategy.EPSILON_GREEDY])
def test_bandits_split_equally_during_burn_in(strategy: AllocationStrategy) -> None:
    counts = {
        "arm0": ArmCounts(impressions=BURN_IN_IMPRESSIONS - 1, conversions=0),
        "arm1": ArmCounts(impressions=5000, conversions=900),
    }
    assert shares(make_experiment(strategy), counts)["arm0"] == pytest.approx(0.5, abs=0.02)


def test_thompson_favours_the_better_arm_and_keeps_the_floor_share() -> None:
    counts = {
        "arm0": ArmCounts(impressions=5000, conversions=250),
        "arm1": ArmCounts(impressions=5000, conversions=400),
    }
    result = shares(make_experiment(AllocationStrategy.THOMPSON_SAMPLING), counts)
    assert result["arm0"] == pytest.approx(FLOOR_SHARE, abs=0.01)


def test_thompson_floor_rises_to_an_even_split_once_the_plan_is_served_twice() -> None:
    """A losing arm starved by Thompson sampling gets measured again once the experiment runs past its plan."""
    loser, winner = ArmCounts(impressions=12_000, conversions=600), ArmCounts(impressions=48_000, conversions=3_000)
    plan = planned_impressions([loser, winner])
    assert plan < 30_000  # 60,000 served: past twice the plan
    experiment = make_experiment(AllocationStrategy.THOMPSON_SAMPLING)
    assert shares(experiment, {"arm0": loser, "arm1": winner})["arm0"] == pytest.approx(0.5, abs=0.02)


def test_thompson_floor_ramps_between_once_and_twice_the_plan() -> None:
    arms = [ArmCounts(impressions=10_000, conversions=500), ArmCounts(impressions=10_000, conversions=700)]
    plan = planned_impressions(arms)
    assert plan > 20_000  # served no more than the plan: the floor holds
    assert thompson_floor_share(arms) == FLOOR_SHARE
    scale = 1.5 * plan / 20_000  # halfway between once and twice the plan, at the same rates
    halfway = [
        ArmCounts(impressions=round(a.impressions * scale), conversions=round(a.conversions * scale)) for a in arms
    ]
    assert thompson_floor_share(halfway) == pytest.approx((FLOOR_SHARE + 0.5) / 2, abs=0.005)


def test_thompson_splits_evenly_between_equal_arms() -> None:
    counts = {
        "arm0": ArmCounts(impressions=5000, conversions=250),
        "arm1": ArmCounts(impressions=5000, conversions=250),
    }
    assert shares(make_experiment(AllocationStrategy.THOMPSON_SAMPLING), counts)["arm0"] == pytest.approx(0.5, abs=0.02)


def test_epsilon_greedy_exploits_the_best_rate_and_explores_epsilon() -> None:
    counts = {
        "arm0": ArmCounts(impressions=5000, conversions=250),
        "arm1": ArmCounts(impressions=5000, conversions=260),
    }
    result = shares(make_experiment(AllocationStrategy.EPSILON_GREEDY, epsilon=0.2), counts)
    assert result["arm0"] == pytest.approx(0.1, abs=0.01)


def test_a_rollout_stage_is_a_sticky_split_of_all_users_whose_winner_slice_only_grows() -> None:
    experiment = make_experiment(AllocationStrategy.THOMPSON_SAMPLING, traffic=20)
    stage_10, stage_50 = RolloutStage(share=10), RolloutStage(share=50)
    rollout = Rollout(
        winning_variant="arm1", model_version="v1", baseline_version="v0", stages=[10, 50, 100], history=[stage_10]
    )
    rolling = experiment.model_copy(update={"status": ExperimentStatus.ROLLING_OUT, "rollout": rollout})
    users = [f"u{n}" for n in range(20_000)]

    def winners(stage: Experiment) -> set[str]:
        assert all(in_experiment(stage, user) for user in users[:100])  # every user, whatever the traffic was
        return {user for user in users if choose_variant(stage, user, {}, random.Random(1)).model_version == "v1"}

    at_10 = winners(rolling.serving())
    assert rolling.serving().variants[0].name == "rollout:arm1@10%"
    assert len(at_10) / len(users) == pytest.approx(0.10, abs=0.01)
    next_stage = rollout.model_copy(update={"history": [stage_10, stage_50]})
    at_50 = winners(rolling.model_copy(update={"rollout": next_stage}).serving())
    assert len(at_50) / len(users) == pytest.approx(0.50, abs=0.01)
    assert at_10 <= at_50
    assert experiment.serving() is experiment  # a running experiment assigns as itself
