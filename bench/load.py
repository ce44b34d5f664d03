"""`python -m bench.load`: throughput per core and latency under a rising load, through the in-process handlers.

Usage: python -m bench.load [--json] [--workers N] [--cluster] [--paths event,recommend,consumer]
                            [--step-seconds S] [--plot docs/load.png]

N worker processes (default: one per core) each import the deployed functions' handlers (`functions/*/app.py`) and
call them as Lambda would, with API Gateway proxy events and Kinesis batches:

- `event`: POST /api/v1/event, one interaction: validation, the user's and item's features and the attribution of
  the outcome in Redis. The Kinesis PutRecords is the stream's work, not the function's: the worker's stream client
  is an in-process sink (`KinesisSink`) that keeps the records for the consumer and costs nothing measurable;
- `event_batch`: POST /api/v1/events/batch with 50 interactions, the same work per event with one request's
  overhead shared (its rates below count events, its latencies requests);
- `recommend`: POST /api/v1/recommend for a known user, with an `lgbm` champion (MF candidates re-ranked by
  LightGBM) registered in the worker's S3 (moto, in process) and loaded by the product's own registry;
- `consumer`: the online-update function on a Kinesis batch of 100 records from the sink (archive to S3, features
  applied once, the online-learning buffer, and an online update whenever the buffer fills), one request per batch.

Traffic: users and items from a Zipf law over the catalogue (`--items`, `--users`), the event-type mix of real
feedback (mostly views). Redis is the embedded server, or with `--cluster` a real 3+3 Redis Cluster
(`local.redis_cluster`), shared by every worker.

For each path: the capacity of the workers running flat out, the unloaded latency (one worker at a tenth of its
share of that capacity), then steps of Poisson arrivals at a rising share of the workers' joint capacity. A
request's latency runs from its scheduled arrival, so queueing counts. Each step reports the offered and achieved
rates, p50 and p99, the workers' CPU seconds per second and Redis' (INFO cpu), and `per_worker_cpu_second`:
requests per CPU second of handler work, the figure a capacity model divides by. `sustained_per_core` is the
highest achieved rate whose p99 stays within
twice the unloaded p99, per worker process (each is one core at most; the Redis server shares the same cores here,
where ElastiCache would carry it in production).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import EVENT_TYPES, configure, log, redis_server, seed, zipf_items

PATHS = ("event", "event_batch", "recommend", "consumer")
EVENTS_PER_BATCH_REQUEST = 50  # POST /api/v1/events/batch: what a backend forwarding its traffic sends
CONSUMER_BATCH = 100  # the template's BatchSize for the stream consumer
DRAWS = 50_000  # users, items and event types drawn ahead per worker, used in turn
USER_EXPONENT = 0.8  # users are less skewed than items
STEP_SHARES = (0.25, 0.5, 0.7, 0.85, 1.0, 1.15)
UNLOADED_SHARE = 0.1  # the unloaded latency: one worker at a tenth of what it serves flat out
P99_ALLOWANCE = 2.0  # the acceptance: p99 within twice the unloaded p99
BUCKET = "recloop-bench"
REGION = "us-east-1"


@dataclass(frozen=True)
class Traffic:
    items: int
    users: int
    seed_interactions: int


@dataclass(frozen=True)
class Step:
    path: str
    rate: float  # arrivals per second, for this worker; 0: flat out
    seconds: float
    seed: int


# --- one worker -----------------------------------------------------------------------------------------------


class KinesisSink:
    """The worker's Kinesis client: PutRecords keeps the records (for the consumer path) and answers as Kinesis does."""

    def __init__(self, shard: int) -> None:
        self.shard_id = f"shardId-{shard:012d}"
        self.sequence = shard * 10**15
        self.records: list[tuple[str, str, bytes]] = []  # (partition key, sequence number, data)
        self.records_put = 0
        self.record_bytes = 0

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803  # boto3's names
        answered = []
        for record in Records:
            self.sequence += 1
            self.records.append((record["PartitionKey"], str(self.sequence), record["Data"]))
            self.records_put += 1
            self.record_bytes += len(record["Data"])
            answered.append({"SequenceNumber": str(self.sequence), "ShardId": self.shard_id})
        return {"FailedRecordCount": 0, "Records": answered}

    def batch(self, size: int) -> dict[str, Any] | None:
        """The oldest `size` records as the event source mapping delivers them to the function."""
        if len(self.records) < size:
            return None
        taken, self.records = self.records[:size], self.records[size:]
        return {
            "Records": [
                {
                    "kinesis": {
                        "partitionKey": key,
                        "sequenceNumber": sequence,
                        "data": base64.b64encode(data).decode(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventID": f"{self.shard_id}:{sequence}",
                }
                for key, sequence, data in taken
            ]
        }


class Worker:
    """The handlers of one Lambda execution environment per function, in this process, against the shared Redis."""

    def __init__(self, index: int, traffic: Traffic, champion_files: dict[str, bytes]) -> None:
        import boto3

        from local.inprocess import ApiClient, LambdaContext, load_function
        from recloop.adapters.stream import KinesisEventStream
        from recloop.container import get_container
        from recloop.models.bundle import ModelBundle

        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName=f"recloop-load-{index}")["QueueUrl"]
        os.environ["DEAD_LETTER_QUEUE_URL"] = queue
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        self.api = ApiClient()
        self.online_update = load_function("online_update")
        self.context = LambdaContext()
        services = get_container()
        self.sink = KinesisSink(index)
        services.__dict__["stream"] = KinesisEventStream(self.sink, "recloop-load")
        bundle = ModelBundle.from_files(champion_files)
        services.registry.register(bundle)
        services.registry.promote(bundle.metadata.version, "load test champion")
        # Who and what, drawn ahead (a Zipf draw over the catalogue costs more than a request).
        rng = np.random.default_rng(1000 + index)
        self.users = zipf_items(rng, traffic.users, DRAWS, exponent=USER_EXPONENT)
        self.items = zipf_items(rng, traffic.items, DRAWS)
        self.kinds = rng.integers(0, len(EVENT_TYPES), size=DRAWS)
        self.drawn = 0
        self.batches = 0

    def _event_body(self) -> dict[str, Any]:
        n = self.drawn % DRAWS
        self.drawn += 1
        # The live API accepts recent times only: now.
        return {
            "user_id": f"u{self.users[n]}",
            "item_id": f"i{self.items[n]}",
            "event_type": EVENT_TYPES[self.kinds[n]],
            "timestamp": time.time(),
        }

    def _refill(self) -> None:
        """The records the event function would have put on the stream, for the consumer path."""
        from recloop.handlers.http.schemas import InteractionIn

        now = time.time()
        events = [InteractionIn(**self._event_body()).to_event(now) for _ in range(CONSUMER_BATCH)]
        self.sink.put_records("recloop-load", [{"PartitionKey": e.user_id, "Data": e.to_record()} for e in events])

    def call(self, path: str) -> None:
        if path == "event":
            status, _ = self.api.post_event(**self._event_body())
        elif path == "event_batch":
            events = [self._event_body() for _ in range(EVENTS_PER_BATCH_REQUEST)]
            status, _ = self.api.request("event", "POST", "/api/v1/events/batch", {"events": events})
        elif path == "recommend":
            status, _ = self.api.recommend(f"u{self.users[self.drawn % DRAWS]}", 10)
            self.drawn += 1
        else:
            batch = self.sink.batch(CONSUMER_BATCH)
            if batch is None:
                self._refill()
                batch = self.sink.batch(CONSUMER_BATCH)
            response = self.online_update.lambda_handler(batch, self.context)
            self.batches += 1
            status = 500 if response.get("batchItemFailures") else 200
        if not 200 <= status < 300:
            raise RuntimeError(f"{path} answered {status}")

    def run(self, step: Step) -> dict[str, Any]:
        """Open loop: Poisson arrivals at `step.rate` (flat out if 0); latency from each scheduled arrival."""
        rng = np.random.default_rng(step.seed)
        latencies: list[float] = []
        printed = sys.stdout
        trips = ROUND_TRIPS[0]
        cpu_started, started = time.process_time(), time.perf_counter()
        arrival = started
        while True:
            now = time.perf_counter()
            if now - started >= step.seconds:
                break
            if step.rate:
                arrival += rng.exponential(1 / step.rate)
                if arrival > now:
                    time.sleep(arrival - now)
            else:
                arrival = now
            self.call(step.path)
            latencies.append((time.perf_counter() - arrival) * 1000)
            if isinstance(printed, io.StringIO) and printed.tell() > 1 << 20:  # the dropped metric records
                printed.seek(0)
                printed.truncate()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return {
            "latencies_ms": latencies,
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "round_trips": ROUND_TRIPS[0] - trips,
            **self.archive(),
        }

    def archive(self) -> dict[str, Any]:
        """What the consumer path archived so far: bytes and objects in S3, events, stream record bytes."""
        import boto3

        from recloop.learning.archive import ARCHIVE_PREFIX

        pages = (
            boto3.client("s3", region_name=REGION)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=BUCKET, Prefix=ARCHIVE_PREFIX)
        )
        objects = [o for page in pages for o in page.get("Contents", [])]
        return {
            "archive_bytes": sum(o["Size"] for o in objects),
            "archive_objects": len(objects),
            "archived_events": self.batches * CONSUMER_BATCH,
            "consumer_batches": self.batches,
            "record_bytes": self.sink.record_bytes / max(1, self.sink.records_put),
        }


ROUND_TRIPS = [0]  # Redis commands or pipelines sent by this worker process


def _count_round_trips() -> None:
    """Count every packet of commands the worker sends to Redis: one per command, or one per pipeline."""
    from redis.connection import AbstractConnection

    send = AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        ROUND_TRIPS[0] += 1
        send(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def _worker_main(index: int, environ: dict[str, str], traffic: Traffic, files: dict[str, bytes], conn: Any) -> None:
    os.environ.update(environ)
    from moto import mock_aws

    _count_round_trips()

    # The handlers print their EMF metric records to stdout: dropped, the pipe carries the results.
    with mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        worker = Worker(index, traffic, files)
        for path in PATHS:  # warm: imports, connections, the champion loaded
            for _ in range(3):
                worker.call(path)
        conn.send("ready")
        while (step := conn.recv()) is not None:
            conn.send(worker.run(step))


# --- the parent: seeding, the champion, the steps --------------------------------------------------------------


@contextlib.contextmanager
def workers(count: int, traffic: Traffic, files: dict[str, bytes]) -> Iterator[list[Any]]:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as Lambda's execution environments are
    pipes, processes = [], []
    environ = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("REDIS_", "AWS_", "POWERTOOLS_", "BUCKET", "STREAM", "AUTH_"))
    }
    for index in range(count):
        parent, child = context.Pipe()
        process = context.Process(target=_worker_main, args=(index, environ, traffic, files, child), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a load worker failed to start")
        yield pipes
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def run_step(
    pipes: list[Any], path: str, rate: float, seconds: float, *, meters: tuple[Any, Any], seed_value: int
) -> dict[str, Any]:
    """One step on every worker at once; `rate` is the total arrival rate (0: every worker flat out)."""
    redis_cpu, redis_commands = meters
    cpu_before, commands_before = redis_cpu(), redis_commands()
    started = time.perf_counter()
    for n, pipe in enumerate(pipes):
        pipe.send(Step(path, rate / len(pipes), seconds, seed_value * 100 + n))
    results = [pipe.recv() for pipe in pipes]
    wall = time.perf_counter() - started
    latencies = np.concatenate([np.asarray(r["latencies_ms"]) for r in results])
    requests = int(latencies.size)
    worker_cpu = sum(r["cpu_seconds"] for r in results)
    commands = redis_commands() - commands_before
    return {
        "round_trips": round(sum(r["round_trips"] for r in results) / max(1, requests), 2),
        "redis_commands": round(commands / max(1, requests), 1),
        "offered_per_s": round(rate, 1) if rate else None,
        "achieved_per_s": round(requests / wall, 1),
        "requests": requests,
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "worker_cpu_per_s": round(worker_cpu / wall, 3),
        "redis_cpu_per_s": round((redis_cpu() - cpu_before) / wall, 3),
        "per_worker_cpu_second": round(requests / worker_cpu, 1) if worker_cpu else None,
        "archive": {
            name: sum(r[name] for r in results)
            for name in ("archive_bytes", "archive_objects", "archived_events", "consumer_batches")
        }
        | {"record_bytes": round(float(np.mean([r["record_bytes"] for r in results])), 1)},
    }


def curve(pipes: list[Any], path: str, seconds: float) -> dict[str, Any]:
    meters = _redis_readers()
    flat_out = run_step(pipes, path, 0, seconds / 2, meters=meters, seed_value=2)
    capacity = flat_out["achieved_per_s"]
    unloaded_rate = UNLOADED_SHARE * capacity / len(pipes)
    unloaded = run_step(pipes[:1], path, unloaded_rate, seconds, meters=meters, seed_value=1)
    steps = []
    for n, share in enumerate(STEP_SHARES):
        step = run_step(pipes, path, capacity * share, seconds, meters=meters, seed_value=3 + n)
        step["share_of_capacity"] = share
        steps.append(step)
        log(
            f"[load] {path}: offered {step['offered_per_s']}/s achieved {step['achieved_per_s']}/s "
            f"p50 {step['p50_ms']} ms p99 {step['p99_ms']} ms (unloaded p99 {unloaded['p99_ms']} ms)"
        )
    bound = P99_ALLOWANCE * unloaded["p99_ms"]
    within = [s for s in steps if s["p99_ms"] <= bound and s["achieved_per_s"] >= 0.95 * s["offered_per_s"]]
    sustained = max((s["achieved_per_s"] for s in within), default=0.0)
    events = EVENTS_PER_BATCH_REQUEST if path == "event_batch" else 1
    return {
        "unloaded": unloaded,
        "flat_out": flat_out,
        "steps": steps,
        "p99_bound_ms": round(bound, 3),
        "sustained_per_s": sustained,
        "sustained_per_core": round(sustained / len(pipes), 1),
        "per_worker_cpu_second": flat_out["per_worker_cpu_second"],
        "cpu_ms_per_request": round(1000 / flat_out["per_worker_cpu_second"], 3),
        "round_trips": flat_out["round_trips"],
        "redis_commands": flat_out["redis_commands"],
        "redis_cpu_ms_per_request": round(1000 * flat_out["redis_cpu_per_s"] / flat_out["achieved_per_s"], 4),
        # event_batch: each request carries this many events (the figures above count requests).
        "events_per_request": events,
        "sustained_events_per_core": round(sustained * events / len(pipes), 1) if path.startswith("event") else None,
    }


def _redis_readers() -> tuple[Any, Any]:
    """Seconds of CPU the Redis server(s) used so far (INFO cpu), and commands processed (INFO stats), summed over
    every node."""
    from recloop.adapters.redis import connect
    from recloop.core.settings import Settings

    client = connect(Settings.from_env())

    def total(section: str, fields: tuple[str, ...]) -> float:
        info = client.info(section)
        per_node = info.values() if all(isinstance(v, dict) for v in info.values()) else [info]
        return sum(float(node[name]) for node in per_node for name in fields)

    return (
        lambda: total("cpu", ("used_cpu_user", "used_cpu_sys")),
        lambda: total("stats", ("total_commands_processed",)),
    )


def champion_files(events: list[Any]) -> dict[str, bytes]:
    """An `lgbm` champion trained on the seeded traffic, as registry bundle files."""
    from bench.__main__ import RANKER_TRAINING_EVENTS
    from recloop.core.settings import Settings
    from recloop.learning.training import RankerHyperparameters, train_ranker
    from recloop.models.bundle import ModelKind, ModelMetadata
    from recloop.models.mf import MFHyperparameters, train_mf
    from recloop.models.ranker import RankerModel

    settings = Settings.from_env()
    mf = train_mf(events, MFHyperparameters())
    ranker, _ = train_ranker(events[-RANKER_TRAINING_EVENTS:], settings, MFHyperparameters(), RankerHyperparameters())
    return (
        RankerModel(mf, ranker.booster)
        # Versions are immutable, and the recommend function keeps the models it loaded on local disk by version:
        # a name of its own per run, or a worker would serve an earlier run's model.
        .to_bundle(ModelMetadata(version=f"lgbm-load-{secrets.token_hex(4)}", kind=ModelKind.LGBM))
        .serialised()
    )


@contextlib.contextmanager
def redis_for(cluster: bool) -> Iterator[str]:
    if not cluster:
        with redis_server() as url:
            yield url
        return
    from local.redis_cluster import RedisClusterProcesses

    with RedisClusterProcesses.start() as running:
        os.environ["REDIS_CLUSTER"] = "true"
        yield running.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (the default prints it too)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cluster", action="store_true", help="a real 3+3 Redis Cluster instead of one node")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed-interactions", type=int, default=200_000)
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--plot", type=Path, help="draw the curves into this PNG")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser.error(f"--paths: unknown {sorted(unknown)}; choose from {', '.join(PATHS)}")

    traffic = Traffic(args.items, args.users, args.seed_interactions)
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cores": os.cpu_count(),
        "workers": args.workers,
        "redis": "cluster (3 primaries, 3 replicas)" if args.cluster else "one node (embedded)",
        "traffic": asdict(traffic),
        "step_seconds": args.step_seconds,
        "paths": {},
    }
    with redis_for(args.cluster) as url:
        configure(url)
        os.environ["POPULARITY_CACHE_SECONDS"] = os.environ.get("POPULARITY_CACHE_SECONDS", "1")
        from recloop.adapters.redis import connect
        from recloop.core.settings import Settings
        from recloop.features.store import FeatureStore

        settings = Settings.from_env()
        client = connect(settings)
        started = time.perf_counter()
        events = seed(FeatureStore(client, settings), args.items, args.seed_interactions, args.users)
        files = champion_files(events)
        report["setup_seconds"] = round(time.perf_counter() - started, 1)
        log(f"[load] seeded {args.seed_interactions} interactions, champion trained ({report['setup_seconds']} s)")
        round_trip = [_timed(client.ping) for _ in range(2000)]
        report["redis_round_trip_ms"] = {
            "p50": round(float(np.percentile(round_trip, 50)), 4),
            "p99": round(float(np.percentile(round_trip, 99)), 4),
        }
        with workers(args.workers, traffic, files) as pipes:
            for path in paths:
                report["paths"][path] = curve(pipes, path, args.step_seconds)
    measured = report["paths"]
    if "consumer" in measured:  # the archive and the stream records, as the capacity model reads them
        archived = measured["consumer"]["steps"][-1]["archive"]
        report["archive_bytes_per_event"] = round(archived["archive_bytes"] / max(1, archived["archived_events"]), 1)
        report["archive_puts_per_batch"] = round(archived["archive_objects"] / max(1, archived["consumer_batches"]), 2)
        report["record_bytes"] = archived["record_bytes"]
    report["targets"] = {
        "events_per_core_single": {"target": 2000, "measured": measured.get("event", {}).get("sustained_per_core")},
        "events_per_core_batched": {
            "target": 2000,
            "measured": measured.get("event_batch", {}).get("sustained_events_per_core"),
        },
        "recommend_lgbm_per_core": {
            "target": 300,
            "measured": report["paths"].get("recommend", {}).get("sustained_per_core"),
        },
    }
    if args.plot:
        from bench.plots import load_curves

        report["plot"] = str(load_curves(report, args.plot))
    print(json.dumps(report, indent=2))


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
