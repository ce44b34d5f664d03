"""`python -m bench.training`: time to train the `lgbm` model on synthetic interactions (JSON on stdout).

Usage: python -m bench.training [--interactions 1000000] [--users 50000] [--items 100000]
The synthetic log has long-tailed item popularity, users with a few favourite item groups, and all event
types; the timing covers MF (for the ranker's feature), the point-in-time replay that builds the ranker's
rows, LightGBM LambdaRank, and MF refit on the whole window for serving: everything `train_ranker` does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from bench.common import EVENT_TYPES, T0, log, zipf_items


def synthetic_events(interactions: int, users: int, items: int, seed: int = 5) -> list:
    from recloop.core.events import EventType, Interaction

    rng = np.random.default_rng(seed)
    groups = 50
    user_group = rng.integers(0, groups, size=users)
    who = rng.integers(0, users, size=interactions)
    popular = zipf_items(rng, items, interactions)
    # 60% of events fall in the user's own group of items (items whose index % groups == group).
    own = rng.random(interactions) < 0.6
    picked = np.where(own, (popular // groups) * groups + user_group[who], popular) % items
    kinds = rng.integers(0, len(EVENT_TYPES), size=interactions)
    gaps = rng.exponential(30.0, size=interactions).cumsum()
    return [
        Interaction(
            event_id=f"s{n}",
            user_id=f"u{who[n]}",
            item_id=f"i{picked[n]}",
            event_type=EventType(EVENT_TYPES[kinds[n]]),
            timestamp=T0 + float(gaps[n]),
            received_at=T0,
        )
        for n in range(interactions)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()

    from recloop.core.settings import Settings
    from recloop.learning.training import RankerHyperparameters, train_ranker
    from recloop.models.mf import MFHyperparameters
    from recloop.tools.progress import TerminalProgress

    started = time.perf_counter()
    events = synthetic_events(args.interactions, args.users, args.items)
    generated = time.perf_counter() - started
    log(f"generated {len(events)} events in {generated:.1f} s")
    started = time.perf_counter()
    with TerminalProgress() as progress:  # drawn on a terminal only, at a few microseconds a step
        _, info = train_ranker(
            events, Settings.from_env({}), MFHyperparameters(), RankerHyperparameters(), progress=progress
        )
    seconds = time.perf_counter() - started
    report = {
        "interactions": len(events),
        "users": args.users,
        "items": args.items,
        "cores": os.cpu_count(),
        "train_lgbm_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **info,
        "target_met_train_under_600s": seconds <= 600,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
