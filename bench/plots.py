"""The benchmarks' plots (`--plot`), drawn with matplotlib: imported by a benchmark only when a plot is asked for, so
matplotlib (a development requirement) is needed for nothing else.

- `replay_curves`: HR@10 and NDCG@10 over the stream of `python -m bench.replay`, one line per configuration;
- `experiments_figures`: A/A decision rates, power curves and regret curves of `python -m bench.experiments`;
- `drift_distributions`: drift scores and smallest adjusted p-values of `python -m bench.drift`, per scenario;
- `load_curves`: latency against throughput per path of `python -m bench.load`.

Each figure states its protocol in a caption under the plot, so an image read alone says what was measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or used

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

CAPTION_SIZE = 8
DPI = 120


def _caption(figure: Figure, text: str, bottom: float) -> None:
    figure.subplots_adjust(bottom=bottom)
    figure.text(0.01, 0.01, text, fontsize=CAPTION_SIZE, va="bottom", ha="left", wrap=True, color="#333333")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


# -- replay --------------------------------------------------------------------------------------------------------


def replay_caption(report: Mapping[str, Any]) -> str:
    dataset, protocol = report["dataset"], report["protocol"]
    k = protocol["k"]
    positives = ", ".join(protocol["positive_events"])
    bound = dataset["hr_at_10_upper_bound"]
    return (
        f"{Path(dataset['source']).name}: {dataset['events']:,} events in time order ({dataset['users']:,} users, "
        f"{dataset['items']:,} items). Warm-up: the first {protocol['warmup_fraction']:.0%} "
        f"({dataset['warmup_events']:,} events) fill the feature store and train each configuration. Stream: the "
        f"other {dataset['stream_events']:,} events in order; at each of its {dataset['stream_positives']:,} "
        f"positives ({positives}) the configuration gives the user's top {k}, items the user had seen excluded. "
        f"Each point: HR@{k} or NDCG@{k} over the last {protocol['curve_window_positives']:,} positives; the legend "
        f"gives the whole stream's value. HR@{k} upper bound (items seen before or new to all are unreachable): "
        f"{'-' if bound is None else f'{bound:.3f}'}.\n{protocol.get('command', '')}"
    )


def replay_curves(report: Mapping[str, Any], path: Path) -> Path:
    """Two panels, HR@k and NDCG@k over the stream (rolling window of positives), one line per configuration."""
    k = report["protocol"]["k"]
    figure, (hr_axes, ndcg_axes) = plt.subplots(2, 1, figsize=(11, 9), sharex=True)
    for name, result in report["configs"].items():
        curve = result["curve"]
        if not curve["positives"]:
            continue
        (line,) = hr_axes.plot(
            curve["positives"], curve[f"hr_at_{k}"], label=f"{name} ({result[f'hr_at_{k}']:.4f})", linewidth=1.4
        )
        ndcg_axes.plot(
            curve["positives"],
            curve[f"ndcg_at_{k}"],
            label=f"{name} ({result[f'ndcg_at_{k}']:.4f})",
            color=line.get_color(),
            linewidth=1.4,
        )
    window = report["protocol"]["curve_window_positives"]
    for axes, metric in ((hr_axes, f"HR@{k}"), (ndcg_axes, f"NDCG@{k}")):
        axes.set_ylabel(f"{metric}, last {window:,} positives")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title=f"{metric} (whole stream)")
    hr_axes.set_title(f"Recommendation quality over the replayed stream (rolling window of {window:,} positives)")
    ndcg_axes.set_xlabel("stream positives evaluated")
    figure.subplots_adjust(left=0.07, right=0.78, top=0.95, hspace=0.08)
    _caption(figure, replay_caption(report), bottom=0.17)
    return _save(figure, path)


# -- experiments ---------------------------------------------------------------------------------------------------


def decided_by(results: Sequence[Mapping[str, Any]], grid: Sequence[int], winner: str | None = None) -> list[float]:
    """The share of experiments that had declared a winner (`winner` alone, if named) by each impression count."""
    when = [
        result["impressions"]
        for result in results
        if result["winner"] is not None and (winner is None or result["winner"] == winner)
    ]
    return [sum(n <= impressions for n in when) / len(results) for impressions in grid]


def _step_plot(axes: Any, grid: Sequence[int], rates: Sequence[float], **style: Any) -> None:
    axes.step(grid, rates, where="post", linewidth=1.5, **style)


def experiments_figures(
    raw: Mapping[str, Mapping[str, list[dict[str, Any]]]], setup: Mapping[str, Any], folder: Path
) -> list[Path]:
    """One image per figure simulated: `raw[figure][strategy]` holds each experiment's result (`winner`,
    `impressions`; regret runs also `lost_by_read`). `setup` gives the simulation's constants for the captions."""
    written = []
    read_every, alpha = setup["read_every"], setup["alpha"]
    common = (
        f"Simulated users go through RecLoop's assignment (choose_variant), counters (real Redis) and decision rule "
        f"(statistics.evaluate, read every {read_every} impressions)."
    )
    if "aa" in raw:
        grid = list(range(0, setup["max_impressions"] + 1, read_every))
        figure, axes = plt.subplots(figsize=(10, 6))
        for strategy, results in raw["aa"].items():
            rates = decided_by(results, grid)
            _step_plot(axes, grid, rates, label=f"{strategy}: {rates[-1]:.1%} of {len(results)}")
        axes.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"alpha = {alpha}")
        axes.set(
            title="A/A: share of experiments that ever declared a winner",
            xlabel="impressions",
            ylabel="declared a winner by then",
        )
        axes.set_ylim(0, max(2 * alpha, axes.get_ylim()[1]))
        axes.grid(alpha=0.3)
        axes.legend()
        _caption(
            figure,
            f"Two identical variants converting at {setup['base_rate']}, read until a decision or "
            f"{setup['max_impressions']:,} impressions. The always-valid rule keeps the chance of ever declaring a "
            f"winner at most alpha. {common}",
            bottom=0.2,
        )
        written.append(_save(figure, folder / "experiments_aa.png"))
    if "power" in raw:
        grid = list(range(0, setup["max_impressions"] + 1, read_every))
        figure, axes = plt.subplots(figsize=(10, 6))
        for strategy, results in raw["power"].items():
            rates = decided_by(results, grid, "challenger")
            label = f"{strategy}: challenger declared, {rates[-1]:.0%} of {len(results)}"
            _step_plot(axes, grid, rates, label=label)
            wrong = decided_by(results, grid, "control")
            if wrong[-1] > 0:
                _step_plot(axes, grid, wrong, linestyle=":", label=f"{strategy}: control declared (wrong)")
        axes.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="80%")
        axes.set(title="Power: share of experiments that declared the better variant", xlabel="impressions")
        axes.set_ylabel("declared by then")
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend()
        runs = len(next(iter(raw["power"].values())))
        _caption(
            figure,
            f"Control converting at {setup['base_rate']}, challenger at {setup['lifted_rate']}; {runs} experiments "
            f"per strategy, each read until a decision or {setup['max_impressions']:,} impressions. {common}",
            bottom=0.2,
        )
        written.append(_save(figure, folder / "experiments_power.png"))
    if "regret" in raw:
        figure, axes = plt.subplots(figsize=(10, 6))
        for strategy, results in raw["regret"].items():
            curves = [result["lost_by_read"] for result in results]
            grid = [read_every * (n + 1) for n in range(len(curves[0]))]
            mean = [statistics.fmean(values) for values in zip(*curves, strict=True)]
            low = [_quantile(values, 0.1) for values in zip(*curves, strict=True)]
            high = [_quantile(values, 0.9) for values in zip(*curves, strict=True)]
            (line,) = axes.plot(grid, mean, linewidth=1.6, label=f"{strategy}: mean, {mean[-1]:.1f} at the end")
            axes.fill_between(grid, low, high, color=line.get_color(), alpha=0.15)
        axes.set(
            title="Regret: expected conversions lost to the worse variant",
            xlabel="impressions",
            ylabel="cumulative expected lost conversions",
        )
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
        runs = len(next(iter(raw["regret"].values())))
        _caption(
            figure,
            f"Control at {setup['base_rate']}, challenger at {setup['lifted_rate']}, {runs} experiments per strategy "
            f"run to {setup['regret_impressions']:,} impressions without stopping; lost = best rate minus the served "
            f"variant's rate, summed. Shaded: 10th to 90th percentile of the experiments. {common}",
            bottom=0.2,
        )
        written.append(_save(figure, folder / "experiments_regret.png"))
    return written


def _quantile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- drift ---------------------------------------------------------------------------------------------------------


def drift_distributions(
    scenarios: Mapping[str, Sequence[Mapping[str, Any]]], setup: Mapping[str, Any], path: Path
) -> Path:
    """Two panels over the checks of each scenario: the drift score (largest effect over the features) and the
    smallest adjusted p-value (log scale), with the effect floors and the threshold that decide an alarm."""
    import numpy as np

    figure, (score_axes, p_axes) = plt.subplots(1, 2, figsize=(13, 7.5))
    scores = {name: [check["drift_score"] for check in checks] for name, checks in scenarios.items()}
    smallest = {name: [max(check["min_adjusted_p"], 1e-300) for check in checks] for name, checks in scenarios.items()}
    top = max((max(values) for values in scores.values() if values), default=1.0)
    score_bins = np.linspace(0, max(top, *setup["effect_floors"].values()) * 1.05, 60)
    lowest = min((min(values) for values in smallest.values() if values), default=1e-6)
    p_bins = np.logspace(max(np.log10(lowest), -300) - 0.1, 0, 60)
    for name, values in scores.items():
        alarms = sum(bool(check["alarm"]) for check in scenarios[name])
        label = f"{name} (n={len(values)}, alarms {alarms / len(values):.1%})"
        score_axes.hist(values, bins=score_bins, histtype="step", linewidth=1.5, density=True, label=label)
        p_axes.hist(smallest[name], bins=p_bins, histtype="step", linewidth=1.5, density=False, label=name)
    for (floor_name, floor), dashes in zip(setup["effect_floors"].items(), (":", "--", "-."), strict=False):
        label = f"effect floor, {floor_name} {floor}"
        score_axes.axvline(floor, color="grey", linestyle=dashes, linewidth=1, label=label)
    score_axes.set(title="Drift score per check", xlabel="drift score (largest KS D or TVD)", ylabel="density")
    threshold = setup["threshold"]
    p_axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    p_axes.set_xscale("log")
    p_axes.set(title="Smallest adjusted p-value per check", xlabel="Benjamini-Hochberg adjusted p-value (log)")
    p_axes.set_ylabel("checks")
    for axes in (score_axes, p_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    _caption(
        figure,
        f"Each check: a fresh {setup['reference_rows']:,}-row reference against a window of "
        f"{setup['window_rows']:,} rows through RecLoop's reservoir and DriftDetector ({setup['features']} features; "
        f"trivial_at_scale: {setup['large_window_rows']:,}-row windows straight to the detector). A feature alarms "
        f"when its adjusted p-value is under the threshold and its effect reaches its floor (grey lines). Scenarios: "
        f"no drift; a 0.25 sd mean shift in one numeric feature; the event mix 60/30/10 -> 50/35/15; a 0.02 sd "
        f"shift (trivial) in one numeric feature.",
        bottom=0.3,
    )
    figure.subplots_adjust(top=0.94, wspace=0.22)
    return _save(figure, path)


def load_curves(report: Mapping[str, Any], path: Path) -> Path:
    """p50 and p99 against the achieved rate, one panel per path of `python -m bench.load`, with the p99 bound."""
    curves = report["paths"]
    figure, panels = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 4.2), squeeze=False)
    for axes, (name, curve) in zip(panels[0], curves.items(), strict=True):
        steps = curve["steps"]
        rates = [step["achieved_per_s"] for step in steps]
        axes.plot(rates, [step["p50_ms"] for step in steps], marker="o", label="p50")
        axes.plot(rates, [step["p99_ms"] for step in steps], marker="o", label="p99")
        axes.axhline(curve["p99_bound_ms"], color="#aa3333", linestyle="--", linewidth=1, label="2x unloaded p99")
        axes.axvline(curve["sustained_per_s"], color="#777777", linestyle=":", linewidth=1, label="sustained")
        axes.set_yscale("log")
        axes.set_title(f"{name}: {curve['sustained_per_core']:g}/s per core sustained")
        axes.set_xlabel("requests per second (achieved)")
        axes.set_ylabel("latency from arrival, ms")
        axes.legend(fontsize=CAPTION_SIZE)
    _caption(
        figure,
        f"python -m bench.load: {report['workers']} worker processes on {report['cores']} cores, Redis "
        f"{report['redis']}; Poisson arrivals at rising shares of the flat-out rate, {report['step_seconds']:g} s "
        f"per step; latency counted from each scheduled arrival. Traffic: Zipf over {report['traffic']['items']:,} "
        f"items and {report['traffic']['users']:,} users.",
        bottom=0.24,
    )
    return _save(figure, path)
