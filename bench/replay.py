"""`python -m bench.replay`: recommendation quality of the whole loop on a time-ordered event log.

The protocol is the replay harness's (``recloop.learning.evaluation``), which training's holdout check runs too:
the first half of the log warms the feature store up and is given to each configuration's ``fit``; then, for
each positive event (like, purchase) of the second half, the configuration is asked for the user's top 10 at the
event's time, excluding every item the user had any event with before; HR@10 and NDCG@10 are scored overall and
for known users (users with an earlier event of any type).

Everything that is RecLoop runs for real: a real Redis server (FLUSHDB between configurations), the feature
store's write path, and the Recommender for requests, with ``now`` set to the event's time so decay follows the
data's clock. The Kinesis write of POST /event is not part of the replay.

Hyperparameters are never chosen on the stream half: RecLoop runs with its default settings (only the
popularity cache is off, so every request sees every earlier event), and peer models use fixed values
documented in ``bench.peers``, chosen without the stream half of any run.

Configurations are named in ``bench.configs.CONFIGS``; a module passed with ``--plugin`` may add its own with
``bench.configs.register``.

``--plot FILE.png`` draws HR@10 and NDCG@10 over the stream, each point over a rolling window of positives (a tenth
of the stream's positives unless ``--plot-window`` says), one line per configuration, with the protocol in the
caption (bench.plots; needs matplotlib). The JSON report then carries each configuration's curve, a few hundred
points.

Usage:
    python -m bench.replay --movietweetings [DIR] [--limit N] [--config NAME ...] [--json] [--plot FILE.png]
    python -m bench.replay --events FILE.csv [--limit N] [--config NAME ...] [--json] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import log, redis_server
from bench.configs import resolve
from recloop.learning.datasets import load_dataset
from recloop.learning.evaluation import replay_report
from recloop.tools.progress import TerminalProgress

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MOVIETWEETINGS = ROOT.parent / "shared" / "data" / "movietweetings-100k"
DEFAULT_CONFIGS = ("popularity", "realtime", "implicit_als")


def table(report: dict[str, Any]) -> str:
    d = report["dataset"]
    lines = [
        f"{d['source']}: {d['events']} events, {d['users']} users, {d['items']} items; "
        f"{d['stream_positives']} stream positives ({d['stream_positives_known_users']} of known users), "
        f"HR@10 upper bound {d['hr_at_10_upper_bound']}",
        f"{'config':<14} {'HR@10':>8} {'NDCG@10':>8} {'HR@10 kn':>9} {'NDCG kn':>8} {'positives':>9} {'known':>7} "
        f"{'wall s':>8}",
    ]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for name, r in report["configs"].items():
        lines.append(
            f"{name:<14} {cell(r['hr_at_10']):>8} {cell(r['ndcg_at_10']):>8} {cell(r['hr_at_10_known_users']):>9} "
            f"{cell(r['ndcg_at_10_known_users']):>8} {r['positives_evaluated']:>9} {r['positives_known_users']:>7} "
            f"{r['wall_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="CSV: user_id,item_id,event_type,timestamp (or JSON lines)")
    source.add_argument(
        "--movietweetings",
        type=Path,
        nargs="?",
        const=DEFAULT_MOVIETWEETINGS,
        help=f"folder with ratings.dat (default {DEFAULT_MOVIETWEETINGS})",
    )
    parser.add_argument("--limit", type=int, help="use only the first N events after sorting")
    parser.add_argument("--config", action="append", help=f"repeatable; default {' '.join(DEFAULT_CONFIGS)}")
    parser.add_argument("--plugin", action="append", default=[], help="module to import that register()s configs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--plot", type=Path, help="PNG: HR@10 and NDCG@10 over the stream, per configuration")
    parser.add_argument("--plot-window", type=int, help="positives per point of --plot (default: a tenth of them)")
    args = parser.parse_args(argv)

    for module in args.plugin:
        importlib.import_module(module)
    configs = args.config or list(DEFAULT_CONFIGS)
    try:
        systems = {name: resolve(name) for name in configs}  # fail before any work on an unknown name
    except KeyError as exc:
        parser.error(exc.args[0])
    if args.limit is not None and args.limit < 2:
        parser.error("--limit must be at least 2")
    if args.plot_window is not None and args.plot_window < 1:
        parser.error("--plot-window must be at least 1")
    loaded = time.perf_counter()
    dataset = load_dataset(args.events if args.events is not None else args.movietweetings, args.limit)
    log(f"loaded {len(dataset.events)} events from {dataset.source} in {time.perf_counter() - loaded:.1f}s")

    with redis_server() as url, TerminalProgress() as progress:
        report = replay_report(
            dataset,
            systems,
            url,
            log=log,
            progress=progress,
            curves=args.plot is not None,
            curve_window=args.plot_window,
        )
    report["protocol"]["command"] = "python -m bench.replay " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.plot is not None:
        from bench.plots import replay_curves

        log(f"plot: {replay_curves(report, args.plot)}")
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
