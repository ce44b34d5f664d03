"""Which users enter an experiment, and which variant serves each request.

Entry and fixed splits hash the experiment's salt with the user id, so a user keeps the same answer for the whole
experiment on every Lambda instance. The bandits decide per request from the counters: they start with an equal
burn-in and always keep a floor share per arm, so every arm keeps being measured.

Thompson sampling alone starves the losing arm: once its posterior falls behind, its sample hardly grows, and the
always-valid test (recloop.experiments.statistics) may never gather enough of it to conclude. So the floor rises once
the experiment has served what a balanced split would need to find the minimum lift: from FLOOR_SHARE there to an
equal split at twice that. Early traffic, where a bandit saves most, stays adaptive; an experiment that has run long
without a decision buys the measurement it lacks, and its decision ends the loss.
"""

from __future__ import annotations

import hashlib
import random

from recloop.core.settings import AllocationStrategy
from recloop.experiments.counters import ArmCounts
from recloop.experiments.model import Experiment, Variant, split_weights
from recloop.experiments.statistics import planned_impressions

# Bandits split traffic equally until every arm has this many impressions.
BURN_IN_IMPRESSIONS = 200
# Thompson sampling gives every arm at least this share of the experiment's traffic until the plan is served: enough
# measurement of a losing arm for most decisions (0.10 left a 0.05 vs 0.06 test undecided too often), little enough
# lost conversions (0.20 lost more than half of what a 50/50 split loses).
FLOOR_SHARE = 0.15
# The floor reaches an equal split when the experiment has served this many times the plan.
FLOOR_RAMP_END = 2.0


def unit_hash(key: str) -> float:
    """sha256 of `key` as a uniform number in [0, 1)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def in_experiment(experiment: Experiment, user_id: str) -> bool:
    return unit_hash(f"{experiment.salt}:{user_id}") * 100 < experiment.traffic_percentage


def choose_variant(experiment: Experiment, user_id: str, counts: dict[str, ArmCounts], rng: random.Random) -> Variant:
    """The variant that serves this request; `counts` by variant name (missing: no data yet)."""
    variants = experiment.variants
    if experiment.allocation_strategy is AllocationStrategy.FIXED_SPLIT:
        return _split_by_hash(variants, unit_hash(f"{experiment.salt}:split:{user_id}"))
    empty = ArmCounts()
    arms = [counts.get(variant.name, empty) for variant in variants]
    if min(arm.impressions for arm in arms) < BURN_IN_IMPRESSIONS:
        return rng.choice(variants)
    if experiment.allocation_strategy is AllocationStrategy.THOMPSON_SAMPLING:
        if rng.random() < thompson_floor_share(arms) * len(variants):
            return rng.choice(variants)
        draws = [rng.betavariate(1 + arm.conversions, 1 + arm.impressions - arm.conversions) for arm in arms]
        return variants[draws.index(max(draws))]
    # epsilon_greedy: explore uniformly with probability epsilon, else the best observed rate (ties at random).
    if rng.random() < experiment.epsilon:
        return rng.choice(variants)
    rates = [arm.conversions / arm.impressions for arm in arms]
    best = max(rates)
    return rng.choice([variant for variant, rate in zip(variants, rates, strict=True) if rate == best])


def thompson_floor_share(arms: list[ArmCounts]) -> float:
    """Each arm's floor share under Thompson sampling, after the burn-in (see the module's docstring)."""
    served = sum(arm.impressions for arm in arms)
    plan = planned_impressions(arms)
    if served <= plan:
        return FLOOR_SHARE
    progress = min(1.0, (served - plan) / ((FLOOR_RAMP_END - 1) * plan))
    return FLOOR_SHARE + progress * (1 / len(arms) - FLOOR_SHARE)


def _split_by_hash(variants: list[Variant], position: float) -> Variant:
    """The variant whose slice of [0, 1), by weight (None: equal shares), holds `position`."""
    weights = split_weights(variants)
    running = 0.0
    for variant, weight in zip(variants, weights, strict=True):
        running += weight
        if position < running:
            return variant
    return variants[-1]  # rounding: weights that sum to 0.9999999
