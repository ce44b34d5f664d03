"""Move the decay epoch to now and rescale every stored decayed value to it (the REDIS_URL of the environment):

    python -m recloop.tools.rescale_decay [--check]

Needed once the epoch is RESCALE_DUE_EXPONENT half-lives old (`--check` reports its age): about 15 years at the default
POPULARITY_HALF_LIFE_HOURS, 2 years at the smallest. Feature updates pause while it runs (seconds per million keys);
events keep being accepted and the stream consumer applies them afterwards. Progress goes to stderr, a JSON summary
to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from recloop.container import get_container
from recloop.features.decay import MAX_SAFE_EXPONENT, RESCALE_DUE_EXPONENT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rescale RecLoop's decayed feature values to a new epoch (now).")
    parser.add_argument("--check", action="store_true", help="only report the epoch's age; change nothing")
    args = parser.parse_args(argv)

    store = get_container().store
    now = time.time()
    age = store.clock.exponent(now)
    report: dict[str, object] = {
        "epoch": store.clock.epoch(now),
        "age_half_lives": round(age, 1),
        "rescale_due_at": RESCALE_DUE_EXPONENT,
        "overflow_at": MAX_SAFE_EXPONENT,
    }
    if not args.check:
        report["rescaled"] = store.rescale_decay(now, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
