"""The benchmarks' plots (`--plot`): each benchmark, run small over a real Redis, writes PNG images that open as
such; the replay's curves are the replay harness's rolling windows, in the JSON report only when asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from bench.configs import resolve
from bench.experiments import BASE_RATE, LIFTED_RATE, READ_EVERY, experiment, run
from bench.plots import experiments_figures
from recloop.core.settings import AllocationStrategy
from recloop.experiments.counters import ExperimentCounters
from recloop.experiments.statistics import ALPHA
from recloop.learning.datasets import load_dataset
from recloop.learning.evaluation import Judgement, replay_report, replay_system, rolling_curve, warmup_split

# The tests that reach Redis: deselected in the cluster run.
BENCH_SCRIPTS = pytest.mark.single_node("the benchmarks and the replay harness connect one Redis by its URL alone")

ROOT = Path(__file__).resolve().parents[3]  # the repository
MOVIETWEETINGS = ROOT.parent / "shared" / "data" / "movietweetings-100k"


def run_bench(module: str, *args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    """The benchmark as a developer runs it (CI=true: no progress bars in the captured output)."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def assert_drawn_png(path: Path) -> None:
    """A PNG file that decodes, of a figure's size, with more on it than a blank canvas."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 800 and height >= 600, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # lines, text and legends, antialiased


def test_matplotlib_is_imported_only_for_a_plot() -> None:
    code = (
        "import sys, bench.replay, bench.experiments, bench.drift, bench.dataset, local.dev; "
        "print(sorted({'matplotlib', 'tqdm'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@BENCH_SCRIPTS
def test_the_replay_curves_are_rolling_windows_of_the_judged_positives(redis_url: str) -> None:
    dataset = load_dataset(MOVIETWEETINGS, 600)
    trace: list[Judgement] = []
    reports: list[tuple[str, int, int | None]] = []
    result = replay_system(
        "popularity",
        resolve("popularity"),
        dataset.events,
        redis_url,
        trace=trace,
        progress=lambda step, done=0, total=None: reports.append((step, done, total)),
        curve_window=20,
    )
    assert result["curve"] == rolling_curve([judged.rank for judged in trace], 20)
    assert len(result["curve"]["positives"]) == min(200, result["positives_evaluated"] - 20 + 1)
    warmup, stream = warmup_split(dataset.events)
    assert reports[-1] == ("popularity: stream", len(stream), len(stream))
    assert ("popularity: warm-up", len(warmup), len(warmup)) in reports
    assert ("popularity: fit", 0, None) in reports

    small = replay_report(dataset, {"popularity": resolve("popularity")}, redis_url)
    assert "curve" not in small["configs"]["popularity"]  # a curve only when asked for
    assert "curve_window_positives" not in small["protocol"]


@BENCH_SCRIPTS
def test_replay_plot(redis_url: str, tmp_path: Path) -> None:
    image = tmp_path / "replay.png"
    done = run_bench(
        "bench.replay",
        *("--movietweetings", str(MOVIETWEETINGS), "--limit", "1500"),
        *("--config", "popularity", "--config", "realtime", "--plot", str(image), "--json"),
        redis_url=redis_url,
    )
    assert_drawn_png(image)
    report = json.loads(done.stdout)
    window = report["protocol"]["curve_window_positives"]
    assert window == max(10, report["dataset"]["stream_positives"] // 10)
    for result in report["configs"].values():
        curve = result["curve"]
        assert curve["window"] == window
        assert curve["positives"][0] == window and curve["positives"][-1] == result["positives_evaluated"]
        assert len(curve["positives"]) == len(curve["hr_at_10"]) == len(curve["ndcg_at_10"]) <= 200
        assert all(0 <= ndcg <= hr <= 1 for hr, ndcg in zip(curve["hr_at_10"], curve["ndcg_at_10"], strict=True))


@BENCH_SCRIPTS
def test_experiments_plots(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    done = run_bench(
        "bench.experiments",
        *("--only", "power", "--experiments", "2", "--workers", "1", "--plot", str(tmp_path)),
        redis_url=redis_url,
    )
    assert "power_0.05_vs_0.06_within_60000" in json.loads(done.stdout)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["experiments_power.png"]
    assert_drawn_png(tmp_path / "experiments_power.png")

    # The A/A and regret figures, from experiments simulated as the benchmark does, over shorter horizons.
    counters = ExperimentCounters(redis_client)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {"aa": {}, "regret": {}}
    for strategy in (AllocationStrategy.FIXED_SPLIT, AllocationStrategy.THOMPSON_SAMPLING):
        raw["aa"][strategy.value] = [
            run(
                counters,
                experiment(strategy, seed),
                {"control": BASE_RATE, "challenger": BASE_RATE},
                impressions=1_000,
                seed=seed,
                stop_at_decision=True,
            )
            for seed in range(3)
        ]
        raw["regret"][strategy.value] = [
            run(
                counters,
                experiment(strategy, seed),
                {"control": BASE_RATE, "challenger": LIFTED_RATE},
                impressions=1_000,
                seed=seed,
                stop_at_decision=False,
            )
            for seed in range(3)
        ]
    assert all(len(result["lost_by_read"]) == 1_000 // READ_EVERY for result in raw["regret"]["fixed_split"])
    setup = {
        "read_every": READ_EVERY,
        "alpha": ALPHA,
        "max_impressions": 1_000,
        "regret_impressions": 1_000,
        "base_rate": BASE_RATE,
        "lifted_rate": LIFTED_RATE,
    }
    written = experiments_figures(raw, setup, tmp_path / "short")
    assert [path.name for path in written] == ["experiments_aa.png", "experiments_regret.png"]
    for path in written:
        assert_drawn_png(path)


@BENCH_SCRIPTS
def test_drift_plot(redis_url: str, tmp_path: Path) -> None:
    image = tmp_path / "drift.png"
    done = run_bench(
        "bench.drift",
        *("--only", "no_drift,mix_shift", "--checks", "4", "--workers", "1", "--plot", str(image)),
        redis_url=redis_url,
    )
    report = json.loads(done.stdout)
    assert report["no_drift_false_alarms"]["n"] == report["event_mix_60_30_10_to_50_35_15_detected"]["n"] == 4
    assert_drawn_png(image)
