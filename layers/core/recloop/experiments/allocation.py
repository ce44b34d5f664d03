"""Which users enter an experiment, and which variant serves each request.

Entry and fixed splits hash the experiment's salt with the user id, so a user keeps the same answer for the whole
experiment on every Lambda instance. The bandits decide per request from the counters: they start with an equal
burn-in and always keep a floor share per arm, so every arm keeps being measured.
"""

from __future__ import annotations

import hashlib
import random

from recloop.core.settings import AllocationStrategy
from recloop.experiments.counters import ArmCounts
from recloop.experiments.model import Experiment, Variant

# Bandits split traffic equally until every arm has this many impressions.
BURN_IN_IMPRESSIONS = 200
# Thompson sampling gives every arm at least this share of the experiment's traffic: enough measurement of a
# losing arm to reach a decision (0.10 left a 0.05 vs 0.06 test undecided too often), little enough lost conversions.
FLOOR_SHARE = 0.15


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
        if rng.random() < FLOOR_SHARE * len(variants):
            return rng.choice(variants)
        draws = [rng.betavariate(1 + arm.conversions, 1 + arm.impressions - arm.conversions) for arm in arms]
        return variants[draws.index(max(draws))]
    # epsilon_greedy: explore uniformly with probability epsilon, else the best observed rate (ties at random).
    if rng.random() < experiment.epsilon:
        return rng.choice(variants)
    rates = [arm.conversions / arm.impressions for arm in arms]
    best = max(rates)
    return rng.choice([variant for variant, rate in zip(variants, rates, strict=True) if rate == best])


def _split_by_hash(variants: list[Variant], position: float) -> Variant:
    """The variant whose slice of [0, 1), by weight (None: equal shares), holds `position`."""
    weights = split_weights(variants)
    running = 0.0
    for variant, weight in zip(variants, weights, strict=True):
        running += weight
        if position < running:
            return variant
    return variants[-1]  # rounding: weights that sum to 0.9999999


def split_weights(variants: list[Variant]) -> list[float]:
    """fixed_split's expected share of each variant."""
    if all(variant.weight is None for variant in variants):
        return [1 / len(variants)] * len(variants)
    total = sum(variant.weight or 0.0 for variant in variants)
    return [(variant.weight or 0.0) / total for variant in variants]
