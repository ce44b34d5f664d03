"""Train, evaluate and optionally register a model from an event log:

python -m recloop.tools.train --events data.csv --kind lgbm [--register [--promote]]

On a terminal, each step of the training shows its progress on stderr (recloop.tools.progress).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from recloop.container import get_container
from recloop.core.settings import Settings
from recloop.learning.datasets import load_events
from recloop.learning.training import train_candidate
from recloop.models.bundle import ModelKind
from recloop.registry.versions import new_version_id
from recloop.tools.progress import TerminalProgress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, evaluate and optionally register a RecLoop model.")
    parser.add_argument("--events", type=Path, required=True, help="CSV, JSONL or MovieTweetings ratings.dat")
    parser.add_argument("--kind", choices=[k.value for k in ModelKind], default=ModelKind.LGBM.value)
    parser.add_argument("--holdout-fraction", type=float, default=0.1)
    parser.add_argument("--register", action="store_true", help="store the version in the registry (BUCKET_NAME)")
    parser.add_argument("--promote", action="store_true", help="make it champion if it beats the current one")
    args = parser.parse_args(argv)

    kind = ModelKind(args.kind)
    settings = Settings.from_env()
    # A version that will serve takes its drift reference's category mix from the deployment's feature store.
    categories_of = get_container().store.categories_of if args.register else None
    started = time.perf_counter()
    with TerminalProgress() as progress:
        progress(f"loading {args.events}")
        events = load_events(args.events)
        result = train_candidate(
            kind,
            events,
            settings,
            new_version_id(kind),
            holdout_fraction=args.holdout_fraction,
            categories_of=categories_of,
            progress=progress,
        )
    report = {
        "version": result.bundle.metadata.version,
        "kind": kind.value,
        "train_seconds": round(time.perf_counter() - started, 1),
        "candidate": result.candidate_metrics,
    }
    if args.register:
        registry = get_container().registry
        registry.register(result.bundle)
        report["registered"] = True
        if args.promote:
            registry.promote(result.bundle.metadata.version, reason="trained from the CLI")
            report["promoted"] = True
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
