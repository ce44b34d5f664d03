"""Results of an experiment and the rule that declares a winner.

The rule must stay right when results are read continuously (dashboards poll, auto-promotion acts at once), so it is
a mixture sequential probability ratio test (mSPRT, Johari, Pekelis and Walsh 2017) on the difference of conversion
rates, with a normal mixing distribution whose spread is the smallest lift worth finding. Its always-valid p-value may
be read after every impression: the chance that it ever falls below alpha when the variants are equal is at most
alpha. `confidence` is one minus that p-value (adjusted for the number of pairs compared). The probability to be best
is reported from Beta posteriors, and never decides alone: read repeatedly, "P(best) >= 0.95" declares false winners
far more often than 5%.
"""

from __future__ import annotations

import functools
import math
import random

from pydantic import BaseModel

from recloop.core.settings import AllocationStrategy
from recloop.experiments.counters import ArmCounts
from recloop.experiments.model import Experiment, split_weights

ALPHA = 0.05
# The mixing spread: the smallest relative lift worth finding (20% of the pooled rate: 0.05 vs 0.06).
MINIMUM_RELATIVE_LIFT = 0.2
SRM_P_THRESHOLD = 0.001
SRM_MIN_EXPECTED = 5.0  # the chi-square approximation needs a few expected impressions per arm
# The plan a bandit's exploration follows (planned_impressions): the power a balanced split would have.
PLANNED_POWER_Z = 0.8416  # 80%
PROBABILITY_BEST_DRAWS = 4000
PROBABILITY_BEST_SEED = 20170101


class ArmResult(BaseModel):
    variant: str
    model_version: str
    impressions: int
    conversions: int
    negatives: int
    conversion_rate: float
    interval_low: float  # 95% always-valid confidence interval of the conversion rate
    interval_high: float
    avg_latency_ms: float | None
    p95_latency_ms: float | None
    probability_best: float | None  # Beta(1 + conversions, 1 + failures) posterior; None when not computed


class Verdict(BaseModel):
    winning_variant: str | None
    confidence: float  # 1 - the always-valid p-value of the leading variant against every other
    decided: bool
    reason: str
    srm_p_value: float | None
    srm_flagged: bool
    arms: list[ArmResult]


def evaluate(experiment: Experiment, counts: dict[str, ArmCounts], probability_best: bool = True) -> Verdict:
    """The verdict on the counts read now. `probability_best=False` skips the posterior (it decides nothing)."""
    variants = experiment.variants
    arms = [counts.get(variant.name, ArmCounts()) for variant in variants]
    rates = [arm.conversions / arm.impressions if arm.impressions else 0.0 for arm in arms]
    pooled = _pooled_rate(arms)
    best: list[float | None] = list(posterior_probability_best(arms)) if probability_best else [None] * len(arms)
    results = [
        ArmResult(
            variant=variant.name,
            model_version=variant.model_version,
            impressions=arm.impressions,
            conversions=arm.conversions,
            negatives=arm.negatives,
            conversion_rate=rate,
            interval_low=low,
            interval_high=high,
            avg_latency_ms=arm.latency_ms_sum / arm.impressions if arm.impressions else None,
            p95_latency_ms=arm.latency_p95_ms,
            probability_best=chance,
        )
        for variant, arm, rate, (low, high), chance in zip(
            variants, arms, rates, [confidence_interval(arm, pooled) for arm in arms], best, strict=True
        )
    ]
    srm_p = srm_p_value(experiment, arms)
    srm_flagged = srm_p is not None and srm_p < SRM_P_THRESHOLD
    leader = rates.index(max(rates))
    p_value = leader_p_value(arms, leader, pooled)
    verdict = {"confidence": 1 - p_value, "srm_p_value": srm_p, "srm_flagged": srm_flagged, "arms": results}
    blocked = _blocked(experiment, arms, leader, srm_flagged)
    if blocked:
        return Verdict(winning_variant=None, decided=False, reason=blocked, **verdict)
    if p_value >= ALPHA:
        reason = f"no variant is better than every other yet (always-valid p = {p_value:.3g}, needs < {ALPHA})"
        return Verdict(winning_variant=None, decided=False, reason=reason, **verdict)
    winner = variants[leader].name
    reason = f"{winner} converts better than every other variant (always-valid p = {p_value:.3g} < {ALPHA})"
    return Verdict(winning_variant=winner, decided=True, reason=reason, **verdict)


def _blocked(experiment: Experiment, arms: list[ArmCounts], leader: int, srm_flagged: bool) -> str | None:
    """Why no decision may be taken now, if a guardrail or the split's health says so."""
    if srm_flagged:
        return f"sample ratio mismatch (chi-square p < {SRM_P_THRESHOLD}): the split is broken, no decision"
    minimum = experiment.guardrails.min_conversions_per_arm
    if min(arm.conversions for arm in arms) < minimum:
        return f"every variant needs {minimum} conversions before a decision"
    control, candidate = arms[0], arms[leader]
    ceiling = experiment.guardrails.max_latency_ratio
    slower = (
        leader
        and control.latency_p95_ms
        and candidate.latency_p95_ms is not None
        and candidate.latency_p95_ms > ceiling * control.latency_p95_ms
    )
    if slower:
        name = experiment.variants[leader].name
        return f"{name} leads but its p95 latency exceeds {ceiling}x control's: not declared winner"
    return None


class RolloutCheck(BaseModel):
    passed: bool | None  # None: the stage is still gathering traffic
    reason: str


def check_rollout_stage(stage: Experiment, counts: dict[str, ArmCounts], min_impressions: int) -> RolloutCheck:
    """The guardrails of one rollout stage (`stage`: Experiment.serving() of a rolling-out experiment, the winner's
    arm first). It halts as soon as the split is broken or the winner converts worse than the champion (both tests
    stay valid when read continuously); it passes once the winner's arm has served `min_impressions` lists with its
    p95 latency within the ceiling."""
    winner, baseline = (counts.get(variant.name, ArmCounts()) for variant in stage.variants)
    srm_p = srm_p_value(stage, [winner, baseline])
    if srm_p is not None and srm_p < SRM_P_THRESHOLD:
        return RolloutCheck(passed=False, reason=f"sample ratio mismatch (chi-square p = {srm_p:.3g})")
    pooled = _pooled_rate([winner, baseline])
    winner_rate = winner.conversions / winner.impressions if winner.impressions else 0.0
    baseline_rate = baseline.conversions / baseline.impressions if baseline.impressions else 0.0
    worse_p = pair_p_value(baseline, winner, pooled)
    if baseline_rate > winner_rate and worse_p < ALPHA:
        return RolloutCheck(
            passed=False,
            reason=f"converts worse than the champion ({winner_rate:.4f} vs {baseline_rate:.4f}, "
            f"always-valid p = {worse_p:.3g})",
        )
    if winner.impressions < min_impressions:
        return RolloutCheck(passed=None, reason=f"{winner.impressions} of {min_impressions} impressions served")
    ceiling = stage.guardrails.max_latency_ratio
    if (
        baseline.latency_p95_ms
        and winner.latency_p95_ms is not None
        and winner.latency_p95_ms > ceiling * baseline.latency_p95_ms
    ):
        return RolloutCheck(
            passed=False,
            reason=f"p95 latency {winner.latency_p95_ms:.1f} ms exceeds {ceiling}x the champion's "
            f"({baseline.latency_p95_ms:.1f} ms)",
        )
    return RolloutCheck(passed=True, reason=f"guardrails held over {winner.impressions} impressions")


def _pooled_rate(arms: list[ArmCounts]) -> float:
    impressions = sum(arm.impressions for arm in arms)
    return sum(arm.conversions for arm in arms) / impressions if impressions else 0.0


def _mixing_variance(pooled: float) -> float:
    return (MINIMUM_RELATIVE_LIFT * pooled) ** 2


def log_mixture_likelihood_ratio(estimate: float, variance: float, mixing_variance: float) -> float:
    """log of the mSPRT statistic for an estimate ~ N(effect, variance), testing effect = 0 against effect ~
    N(0, mixing_variance)."""
    total = variance + mixing_variance
    return 0.5 * math.log(variance / total) + mixing_variance * estimate**2 / (2 * variance * total)


def pair_p_value(first: ArmCounts, second: ArmCounts, pooled: float) -> float:
    """Always-valid p-value of "first and second convert at the same rate"."""
    if not first.impressions or not second.impressions or not 0 < pooled < 1:
        return 1.0
    difference = first.conversions / first.impressions - second.conversions / second.impressions
    variance = pooled * (1 - pooled) * (1 / first.impressions + 1 / second.impressions)
    log_ratio = log_mixture_likelihood_ratio(difference, variance, _mixing_variance(pooled))
    return min(1.0, math.exp(-log_ratio)) if log_ratio < 700 else 0.0


def leader_p_value(arms: list[ArmCounts], leader: int, pooled: float) -> float:
    """The leader beats every other arm: the largest of its pairwise p-values, times the number of pairs that could
    have been compared (Bonferroni: the leader is chosen from the data)."""
    pairs = len(arms) * (len(arms) - 1) // 2
    worst = max(pair_p_value(arms[leader], arm, pooled) for index, arm in enumerate(arms) if index != leader)
    return min(1.0, pairs * worst)


def planned_impressions(arms: list[ArmCounts]) -> float:
    """Impressions a balanced split of these arms needs to find the minimum lift at the pooled rate, at ALPHA with
    80% power (inf before the first conversion)."""
    pooled = _pooled_rate(arms)
    if not 0 < pooled < 1:
        return math.inf
    pairs = len(arms) * (len(arms) - 1) // 2
    # The difference of two arms of n impressions each has variance 2p(1-p)/n; the plan is where that variance is
    # the scale-free fraction of the mixing variance found once per number of pairs.
    per_arm = 2 * pooled * (1 - pooled) / (_planned_variance_ratio(pairs) * _mixing_variance(pooled))
    return per_arm * len(arms)


@functools.cache
def _planned_variance_ratio(pairs: int) -> float:
    """The ratio r = variance / mixing variance at which the mSPRT rejects, at ALPHA / pairs, an estimate
    PLANNED_POWER_Z standard errors below the minimum lift. The mixing spread is the minimum lift, so r depends on
    nothing else: in units of the mixing spread the estimate is 1 - z sqrt(r), and the log ratio falls as r grows."""
    threshold = math.log(pairs / ALPHA)
    low, high = 1e-9, 1.0  # the log ratio is above the threshold at low, below it at high
    for _ in range(100):
        ratio = math.sqrt(low * high)
        estimate = 1 - PLANNED_POWER_Z * math.sqrt(ratio)  # in units of the mixing spread, the minimum lift is 1
        log_ratio = log_mixture_likelihood_ratio(estimate, ratio, 1.0) if estimate > 0 else -math.inf
        low, high = (ratio, high) if log_ratio >= threshold else (low, ratio)
    return low


def confidence_interval(arm: ArmCounts, pooled: float) -> tuple[float, float]:
    """The rates the same mixture test would not reject for this arm at ALPHA: valid at every read."""
    if not arm.impressions:
        return 0.0, 1.0
    rate = arm.conversions / arm.impressions
    spread = max(rate * (1 - rate), 1 / arm.impressions)  # no zero width at 0 or all conversions
    variance = spread / arm.impressions
    mixing = max(_mixing_variance(pooled), 1e-8)
    total = variance + mixing
    radius = math.sqrt(2 * variance * total / mixing * (math.log(1 / ALPHA) + 0.5 * math.log(total / variance)))
    return max(0.0, rate - radius), min(1.0, rate + radius)


def posterior_probability_best(arms: list[ArmCounts]) -> list[float]:
    """P(each arm has the highest rate) under Beta(1 + conversions, 1 + failures): exact for two arms, else Monte
    Carlo with a fixed seed (the same counts give the same answer)."""
    shapes = [(1 + arm.conversions, 1 + arm.impressions - arm.conversions) for arm in arms]
    if len(shapes) == 2:
        second_better = _beta_greater_probability(shapes[1], shapes[0])
        return [1 - second_better, second_better]
    rng = random.Random(PROBABILITY_BEST_SEED)
    wins = [0] * len(shapes)
    for _ in range(PROBABILITY_BEST_DRAWS):
        draws = [rng.betavariate(a, b) for a, b in shapes]
        wins[draws.index(max(draws))] += 1
    return [count / PROBABILITY_BEST_DRAWS for count in wins]


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_greater_probability(first: tuple[int, int], second: tuple[int, int]) -> float:
    """P(X > Y) for X ~ Beta(first), Y ~ Beta(second), integer shapes (closed form, a sum over first's alpha)."""
    (a1, b1), (a2, b2) = first, second
    base = _log_beta(a2, b2)
    total = 0.0
    for i in range(a1):
        total += math.exp(_log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - _log_beta(1 + i, b1) - base)
    return min(1.0, max(0.0, total))


def srm_p_value(experiment: Experiment, arms: list[ArmCounts]) -> float | None:
    """Chi-square goodness of fit of fixed_split impressions to the expected weights (None: not a fixed split, or
    too few impressions to test)."""
    if experiment.allocation_strategy is not AllocationStrategy.FIXED_SPLIT:
        return None
    total = sum(arm.impressions for arm in arms)
    expected = [weight * total for weight in split_weights(experiment.variants)]
    if min(expected) < SRM_MIN_EXPECTED:
        return None
    statistic = sum((arm.impressions - share) ** 2 / share for arm, share in zip(arms, expected, strict=True))
    return chi_square_survival(statistic, len(arms) - 1)


def chi_square_survival(statistic: float, degrees_of_freedom: int) -> float:
    """P(X >= statistic) for X ~ chi-square(degrees_of_freedom)."""
    if statistic <= 0:
        return 1.0
    if degrees_of_freedom == 1:
        return math.erfc(math.sqrt(statistic / 2))
    return _regularized_upper_gamma(degrees_of_freedom / 2, statistic / 2)


def _regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x): a power series below a + 1, a continued fraction (modified Lentz) above."""
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1
            term *= x / n
            total += term
        return max(0.0, 1 - total * math.exp(log_prefactor))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    fraction = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < 1e-15:
            break
    return math.exp(log_prefactor) * fraction
