"""`python -m bench.dataset`: the S3 event archive at scale (JSON on stdout with --json, progress on stderr).

N synthetic events (default 1,000,000 over 7 days, 50,000 users, 100,000 items with long-tailed popularity) are
archived through the stream consumer's own code (`StreamConsumer.archive_many`, the function OnlineUpdateFunction
runs per Kinesis batch), as Kinesis would deliver them: 4 shards (partition key: the user) archiving concurrently,
batches of 100 to 500 records with 56-digit sequence numbers; 1% of the batches delivered twice, and 1% retried
bisected (their events archived a second time, in two more objects). Then, each in a fresh process (so that each
reports its own peak RSS) through the product's S3 client and settings:

- (a) `prepare_dataset` from the batch objects alone;
- (b) `compact_closed_days`: every day into parts, the batch objects deleted;
- (c) `prepare_dataset` from the parts.

Reported for each: seconds, events/s, objects read (GETs), peak RSS; that (a) and (c) give the same dataset (the
same event ids in the same order); beside `bench.common.cpu_reference_ms` measured in the same run.

S3 is moto's ThreadedMotoServer in this process by default; `--s3 localstack` starts LocalStack the way `make dev`
does (`local.services.start_localstack`, the dev profile's port and state folder) and stops it after (`make down`
stops it too if this process is killed); `--endpoint URL` uses an S3 that is already running.

Usage: python -m bench.dataset [--json] [--events 1000000] [--days 7] [--s3 moto|localstack] [--endpoint URL]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.common import EVENT_TYPES, T0, cpu_reference_ms, log, redis_server, zipf_items
from recloop.tools.progress import TerminalProgress

REGION = "us-east-1"
SHARDS = 4
USERS = 50_000
ITEMS = 100_000
BATCH_SIZES = (100, 500)
REDELIVERED_SHARE = 0.01
BISECTED_SHARE = 0.01
TARGET_SECONDS = 120.0


# --- S3 ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def s3_endpoint(kind: str, endpoint: str | None) -> Iterator[tuple[str, str]]:
    """An S3 endpoint and what it is, for the run's duration."""
    if endpoint:
        yield endpoint, endpoint
        return
    if kind == "moto":
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}", "moto ThreadedMotoServer (in process)"
        finally:
            server.stop()
        return
    from local.processes import Processes, _port_free
    from local.runtime import down
    from local.services import DEV, start_localstack

    if not _port_free(DEV.localstack_port) or Processes(DEV).pid("localstack"):
        raise SystemExit(f"port {DEV.localstack_port} is taken (make dev running?): stop it or pass --endpoint")
    log(f"starting LocalStack on {DEV.endpoint} (state in .local/{DEV.name}/localstack)")
    try:
        start_localstack(DEV, Processes(DEV))
        yield DEV.endpoint, f"LocalStack {localstack_version(DEV.endpoint)} ({DEV.endpoint})"
    finally:
        log(f"stopping LocalStack: {', '.join(down(DEV)) or 'nothing left to stop'}")


def localstack_version(endpoint: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as response:
        return json.loads(response.read()).get("version", "?")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_endpoint(endpoint: str) -> None:
    """This process's AWS settings: the product's clients honour AWS_ENDPOINT_URL."""
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        POWERTOOLS_LOG_LEVEL="ERROR",
    )


def object_store(bucket: str) -> Any:
    """The product's ObjectStore on the product's S3 client, counting its GETs."""
    from recloop.adapters.aws import aws_client
    from recloop.adapters.objects import ObjectStore

    class CountingObjectStore(ObjectStore):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.gets = 0
            self._lock = threading.Lock()

        def get(self, key: str) -> tuple[bytes, str] | None:
            with self._lock:
                self.gets += 1
            return super().get(key)

    return CountingObjectStore(aws_client("s3", REGION), bucket)


# --- archiving through the stream consumer ------------------------------------------------------------------------


def synthetic_log(events: int, days: int, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, USERS, size=events),
        "item": zipf_items(rng, ITEMS, events),
        "kind": rng.integers(0, len(EVENT_TYPES), size=events),
        "timestamp": T0 + np.sort(rng.uniform(0, days * 86_400, size=events)),
    }


def sequence_number(shard: int, n: int) -> str:
    """Kinesis-like: 56 digits, increasing within the shard."""
    return f"4959{shard:04d}{n:048d}"


def shard_batches(traffic: dict[str, np.ndarray], shard: int, seed: int) -> Iterator[list[Any]]:
    """The shard's records (users with user % SHARDS == shard), in time order, in batches of 100 to 500."""
    from recloop.core.events import EventType, Interaction
    from recloop.ingest.consumer import StreamRecord

    rng = np.random.default_rng(seed + shard)
    mine = np.flatnonzero(traffic["user"] % SHARDS == shard)
    start = 0
    while start < len(mine):
        size = int(rng.integers(BATCH_SIZES[0], BATCH_SIZES[1] + 1))
        batch = []
        for n in mine[start : start + size]:
            ts = float(traffic["timestamp"][n])
            event = Interaction(
                event_id=f"evt_{int(n):032x}",
                user_id=f"u{traffic['user'][n]}",
                item_id=f"i{traffic['item'][n]}",
                event_type=EventType(EVENT_TYPES[traffic["kind"][n]]),
                timestamp=ts,
                received_at=ts + 0.05,
            )
            batch.append(StreamRecord(f"shardId-{shard:012d}", sequence_number(shard, int(n)), event.to_record()))
        yield batch
        start += size


def archive(bucket: str, events: int, days: int) -> dict[str, Any]:
    """Every synthetic event through StreamConsumer.archive_many, one thread per shard."""
    from recloop.adapters.redis import connect
    from recloop.core.settings import Settings
    from recloop.features.store import FeatureStore
    from recloop.ingest.consumer import StreamConsumer
    from recloop.learning.online.buffer import OnlineBuffer

    traffic = synthetic_log(events, days)
    counts = {"batches": 0, "redelivered": 0, "bisected": 0}
    lock = threading.Lock()
    # The consumer's other parts (features, buffer) are not used by archive_many; they need a Redis to be built.
    with redis_server() as redis_url:
        settings = Settings.from_env({"REDIS_URL": redis_url, "BUCKET_NAME": bucket})
        redis_client = connect(settings)
        consumer = StreamConsumer(
            FeatureStore(redis_client, settings), object_store(bucket), OnlineBuffer(redis_client, settings)
        )

        def run_shard(shard: int) -> None:
            rng = np.random.default_rng(1000 + shard)
            for batch in shard_batches(traffic, shard, seed=7):
                deliveries = [batch]
                draw = rng.random()
                if draw < REDELIVERED_SHARE:
                    deliveries.append(batch)
                elif draw < REDELIVERED_SHARE + BISECTED_SHARE:
                    deliveries += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
                for delivery in deliveries:
                    failures = consumer.archive_many(delivery)
                    if failures:
                        raise RuntimeError(f"archive writes failed: {next(iter(failures.values()))!r}")
                with lock:
                    counts["batches"] += 1
                    counts["redelivered"] += len(deliveries) == 2
                    counts["bisected"] += len(deliveries) == 3

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=SHARDS) as pool:
            list(pool.map(run_shard, range(SHARDS)))
        seconds = time.perf_counter() - started
    listed = list_archive(bucket)
    return {
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds),
        "shards": SHARDS,
        "batch_sizes": list(BATCH_SIZES),
        **counts,
        **listed,
    }


def list_archive(bucket: str) -> dict[str, Any]:
    from recloop.adapters.aws import aws_client

    pages = aws_client("s3", REGION).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/")
    listed = [obj for page in pages for obj in page.get("Contents", [])]
    parts = [obj for obj in listed if obj["Key"].startswith("events/compacted/")]
    return {
        "batch_objects": len(listed) - len(parts),
        "parts": len(parts),
        "mb": round(sum(obj["Size"] for obj in listed) / 2**20, 1),
    }


# --- the measured phases, each in a fresh process ------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def phase(name: str, endpoint: str, bucket: str) -> dict[str, Any]:
    """One measured phase in this (fresh) process."""
    use_endpoint(endpoint)
    from recloop.learning.archive import compact_closed_days, prepare_dataset

    objects = object_store(bucket)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    if name == "compaction":
        days = compact_closed_days(objects, datetime.now(UTC))
        seconds = time.perf_counter() - started
        written = sum(day.events for day in days)
        result: dict[str, Any] = {
            "days": len(days),
            "parts_written": sum(len(day.parts) for day in days),
            "batch_objects_deleted": sum(day.batch_objects for day in days),
            "events_written": written,
            "duplicates_dropped": sum(day.duplicates for day in days),
            "parts_mb": round(sum(day.bytes for day in days) / 2**20, 1),
            "events_per_s": round(written / seconds),
        }
    else:
        with TerminalProgress() as progress:  # drawn on a terminal only: a redirected run measures the same
            dataset = prepare_dataset(objects, progress=progress)
        seconds = time.perf_counter() - started
        ids = "\n".join(event.event_id for event in dataset).encode()
        ordered = all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(dataset))
        result = {
            "events": len(dataset),
            "events_per_s": round(len(dataset) / seconds),
            "time_ordered": ordered,
            "ids_sha256": hashlib.sha256(ids).hexdigest(),
        }
    return {
        "seconds": round(seconds, 2),
        **result,
        "objects_read": objects.gets,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": baseline,
    }


def in_fresh_process(name: str, endpoint: str, bucket: str) -> dict[str, Any]:
    log(f"{name} ...")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(phase, (name, endpoint, bucket))
    log(f"{name}: {result['seconds']} s, {result['objects_read']} GETs, peak RSS {result['peak_rss_mb']} MB")
    return result


def empty_bucket(bucket: str) -> None:
    from recloop.adapters.aws import aws_client
    from recloop.adapters.objects import ObjectStore

    objects = ObjectStore(aws_client("s3", REGION), bucket)
    objects.delete_many(list(objects.keys("")))
    objects.s3.delete_bucket(Bucket=bucket)


def run(events: int, days: int, endpoint: str, backend: str) -> dict[str, Any]:
    use_endpoint(endpoint)
    from recloop.adapters.aws import aws_client

    bucket = f"recloop-dev-bench-dataset-{os.getpid()}"  # dev-named: `make down` clears LocalStack's copy
    aws_client("s3", REGION).create_bucket(Bucket=bucket)
    try:
        log(f"archiving {events} events over {days} days through StreamConsumer.archive_many into {backend} ...")
        archived = archive(bucket, events, days)
        log(f"archived in {archived['seconds']} s: {archived['batch_objects']} batch objects")
        from_batches = in_fresh_process("prepare_from_batch_objects", endpoint, bucket)
        compaction = in_fresh_process("compaction", endpoint, bucket)
        from_parts = in_fresh_process("prepare_from_parts", endpoint, bucket)
        after = list_archive(bucket)
    finally:
        empty_bucket(bucket)
    worst = max(from_batches["seconds"], from_parts["seconds"])
    return {
        "events": events,
        "days": days,
        "s3": backend,
        "cores": os.cpu_count(),
        "cpu_reference_ms": round(cpu_reference_ms(), 2),
        "archive": archived,
        "prepare_from_batch_objects": from_batches,
        "compaction": {**compaction, "archive_after": after},
        "prepare_from_parts": from_parts,
        "same_dataset": from_batches["ids_sha256"] == from_parts["ids_sha256"]
        and from_batches["events"] == from_parts["events"] == events,
        "target_prepare_under_120s": worst <= TARGET_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout (else a short table)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--s3", choices=("moto", "localstack"), default="moto")
    parser.add_argument("--endpoint", help="an S3 endpoint already running (instead of starting one)")
    args = parser.parse_args()
    with s3_endpoint(args.s3, args.endpoint) as (endpoint, backend):
        report = run(args.events, args.days, endpoint, backend)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("prepare_from_batch_objects", "compaction", "prepare_from_parts"):
        figures = report[name]
        print(
            f"{name:28} {figures['seconds']:8.1f} s {figures['events_per_s']:>9} events/s "
            f"{figures['objects_read']:>7} GETs {figures['peak_rss_mb']:>8} MB peak RSS"
        )
    target = report["target_prepare_under_120s"]
    print(f"same dataset: {report['same_dataset']}; preparation within {TARGET_SECONDS:.0f} s: {target}")


if __name__ == "__main__":
    main()
