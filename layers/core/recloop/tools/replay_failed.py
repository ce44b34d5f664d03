"""Replay the stream batches the stream consumer gave up on, from the failed-records bucket:

    python -m recloop.tools.replay_failed --bucket <FailedRecordsBucketName> [--prefix aws/lambda/]
        [--since 2026-03-01T00:00:00Z] [--limit N] [--dry-run]

Run it with the stack's environment: REDIS_URL (and REDIS_AUTH_SECRET_ARN where the cache has a token),
BUCKET_NAME (the event archive), DEAD_LETTER_QUEUE_URL (poison records) and STREAM_NAME (records whose failure
object holds no payload are read back from the stream). Prints one JSON line per failure object, then the totals
on the last line; exits 1 when something is left for the next run (a record failed again, an object could not be
read or moved).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from recloop.adapters.objects import ObjectStore
from recloop.container import get_container
from recloop.ingest.replay import FAILURES_PREFIX, FailedBatchReplayer, ObjectReport


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Replay the Kinesis batches the stream consumer gave up on (idempotent: each event counts once)."
    )
    parser.add_argument(
        "--bucket", required=True, help="the failed-records bucket (stack output FailedRecordsBucketName)"
    )
    parser.add_argument(
        "--prefix", default=FAILURES_PREFIX, help=f"where the failure objects are (default {FAILURES_PREFIX})"
    )
    parser.add_argument("--since", type=utc_time, help="only batches given up on at or after this time (ISO 8601, UTC)")
    parser.add_argument("--limit", type=positive, help="replay at most this many failure objects")
    parser.add_argument(
        "--dry-run", action="store_true", help="count the records that would be replayed; change nothing"
    )
    parser.add_argument(
        "--beyond-window",
        action="store_true",
        help="also replay batches older than the de-duplication window (their events may count twice)",
    )
    args = parser.parse_args(argv)

    services = get_container()
    replayer = FailedBatchReplayer(
        ObjectStore(services.aws_client("s3"), args.bucket),
        services.stream_consumer,
        services.dead_letters,
        services.stream if services.settings.stream_name else None,
        window_seconds=None if args.beyond_window else services.settings.deduplication_seconds,
    )
    summary = replayer.replay(args.prefix, since=args.since, limit=args.limit, dry_run=args.dry_run, progress=report)
    print(json.dumps(summary.totals()), flush=True)
    return 0 if summary.complete else 1


def report(progress: ObjectReport) -> None:
    print(json.dumps(asdict(progress)), flush=True)


def utc_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {value!r}")
    return int(value)


if __name__ == "__main__":
    sys.exit(main())
