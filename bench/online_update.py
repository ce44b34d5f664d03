"""`python -m bench.online_update`: cost of online learning (JSON on stdout).

- `update`: one online step of a full buffer (ONLINE_LEARNING_BUFFER_SIZE events, default 1000) on an MF
  champion of the given catalogue size: the guide's budget is 100 ms. Measured on `recloop.online.apply_update`
  (grow, SGD, held-out check, the step written into the model or undone), each repeat on a fresh buffer of
  long-tailed synthetic events with 10% new items and 30% users unknown to the model, the model as the kept
  steps before it left it.
- `update_lgbm`: the same for an `lgbm` champion (120 trees), with its ranker's leaves refit on 600 served
  queries (60 logged candidates each) labelled by the buffer.
- `update_with_publication`: the whole `OnlineLearner.update()` of the OnlineUpdateFunction on real Redis
  and S3 emulated in process by moto: lock, read buffer, checkpoint, step, register and promote the new
  version (its bundle serialised), drain. moto's S3 is not AWS's; the step alone is the budgeted part.
- `kinesis_batch_handler`: `process_kinesis_batch` over batches of 100 records (feature update and buffer
  append in real Redis), in records per second: with the archive written to moto's S3 in process (whose
  emulation costs more CPU than everything else), and with an S3 client that accepts each put at once, which
  is RecLoop's own cost per record (on AWS, add one PUT round trip per 10 records: they run 10 at a time).

`cpu_reference_ms` times a fixed numpy workload before and after (bench.common.cpu_reference_ms): these
machines are shared, and it shows how fast this one ran.

Usage: python -m bench.online_update [--catalogues 10000,100000] [--users 100000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

import numpy as np

from bench.common import EVENT_TYPES, T0, configure, cpu_reference_ms, log, redis_server, zipf_items
from recloop.learning.evaluation import timing_summary

FACTORS = 48


def synthetic_mf(catalogue: int, users: int, seed: int = 3) -> Any:
    from recloop.models.mf import MatrixFactorisation

    rng = np.random.default_rng(seed)
    return MatrixFactorisation(
        [f"i{n}" for n in range(catalogue)],
        rng.normal(0, 0.15, (catalogue, FACTORS)).astype(np.float32),
        [f"u{n}" for n in range(users)],
        rng.normal(0, 0.15, (users, FACTORS)).astype(np.float32),
        0.1,
        20.0,
    )


def buffer_events(rng: np.random.Generator, catalogue: int, users: int, size: int, start: float) -> list[Any]:
    from recloop.handlers.http.schemas import InteractionIn

    items = zipf_items(rng, catalogue, size)
    who = rng.integers(0, users, size=size)
    kinds = rng.integers(0, len(EVENT_TYPES), size=size)
    new_item = rng.random(size) < 0.1
    new_user = rng.random(size) < 0.3
    events = []
    for n in range(size):
        item = f"new-i{items[n]}" if new_item[n] else f"i{items[n]}"
        user = f"new-u{who[n]}" if new_user[n] else f"u{who[n]}"
        t = start + n
        events.append(
            InteractionIn(user_id=user, item_id=item, event_type=EVENT_TYPES[kinds[n]], timestamp=t).to_event(t)
        )
    return events


def bench_update(catalogue: int, users: int, buffer: int, repeat: int) -> dict[str, Any]:
    from recloop.core.settings import Settings
    from recloop.learning.online.update import apply_update, online_hyperparameters
    from recloop.models.bundle import ModelKind

    params = online_hyperparameters(Settings.from_env({}))
    mf = synthetic_mf(catalogue, users)
    rng = np.random.default_rng(11)
    samples, published = [], 0
    for n in range(repeat + 3):
        events = buffer_events(rng, catalogue, users, buffer, T0 + n * buffer)
        started = time.perf_counter()
        result = apply_update(ModelKind.MF, mf, events, params)
        elapsed = (time.perf_counter() - started) * 1000
        if n >= 3:  # the first steps warm numpy's code paths and allocator
            samples.append(elapsed)
            published += result.step.improved
    return {
        "catalogue": catalogue,
        "model_users": users,
        "factors": FACTORS,
        "buffer_events": buffer,
        "batch_size": params.batch_size,
        "epochs": params.epochs,
        "step": timing_summary(samples),
        "held_out_not_worse": published,
    }


def synthetic_ranker(mf: Any, seed: int = 4) -> Any:
    """An `lgbm` champion's parts: the MF and a LambdaRank booster of the product's size (120 trees)."""
    import lightgbm

    from recloop.learning.training import RankerHyperparameters
    from recloop.models.ranker import FEATURE_NAMES, RankerModel

    params = RankerHyperparameters()
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(20_000, len(FEATURE_NAMES)))
    labels = (rows[:, 0] + rows[:, 2] + rng.normal(size=len(rows)) > 2.5).astype(float)
    data = lightgbm.Dataset(rows, labels, group=[40] * (len(rows) // 40))
    booster = lightgbm.train(
        {"objective": "lambdarank", "num_leaves": params.num_leaves, "verbosity": -1, "num_threads": 2},
        data,
        num_boost_round=params.rounds,
    )
    return RankerModel(mf, booster)


def served_log(rng: np.random.Generator, events: list[Any], queries: int) -> list[Any]:
    """Served-feature records for users of the buffer, each followed by a positive on one logged item."""
    from recloop.models.ranker import FEATURE_NAMES
    from recloop.serving.served_log import LOGGED_RANDOM, LOGGED_TOP, ServedFeatures

    positives = [e for e in events if e.event_type.value in ("like", "purchase")]
    log = []
    for n in range(queries):
        event = positives[n % len(positives)]
        items = [event.item_id, *(f"i{k}" for k in rng.integers(0, 100_000, LOGGED_TOP + LOGGED_RANDOM - 1))]
        rows = rng.normal(size=(len(items), len(FEATURE_NAMES))).astype(np.float32)
        log.append(ServedFeatures(event.user_id, event.timestamp - 1, "lgbm-bench", tuple(items), rows))
    return log


def bench_lgbm_update(catalogue: int, users: int, queries: int, repeat: int) -> dict[str, Any]:
    from recloop.core.settings import Settings
    from recloop.learning.online.update import apply_update, online_hyperparameters
    from recloop.models.bundle import ModelKind

    params = online_hyperparameters(Settings.from_env({}))
    model = synthetic_ranker(synthetic_mf(catalogue, users))
    rng = np.random.default_rng(12)
    samples, refits = [], 0
    for n in range(repeat + 2):
        events = buffer_events(rng, catalogue, users, 1000, T0 + n * 1000)
        log = served_log(rng, events, queries)
        started = time.perf_counter()
        result = apply_update(ModelKind.LGBM, model, events, params, reversed(log))
        elapsed = (time.perf_counter() - started) * 1000
        if n >= 2:
            samples.append(elapsed)
            refits += result.refit is not None
    return {
        "catalogue": catalogue,
        "served_queries_in_log": queries,
        "trees": model.booster.num_trees(),
        "step_with_ranker_refit": timing_summary(samples),
        "refits_run": refits,
    }


def bench_update_with_publication(redis_url: str, catalogue: int, users: int, repeat: int) -> dict[str, Any]:
    import boto3
    import redis
    from moto import mock_aws

    from recloop.adapters.objects import ObjectStore
    from recloop.core.settings import Settings
    from recloop.learning.online.learner import OnlineLearner
    from recloop.models.bundle import ModelKind, ModelMetadata
    from recloop.registry.model_registry import ModelRegistry

    settings = Settings.from_env({"REDIS_URL": redis_url})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    rng = np.random.default_rng(5)
    samples, steps = [], []
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="recloop-bench")
        registry = ModelRegistry(ObjectStore(s3, "recloop-bench"), client)
        registry.register(
            synthetic_mf(catalogue, users).to_bundle(ModelMetadata(version="mf-bench-0", kind=ModelKind.MF))
        )
        registry.promote("mf-bench-0")
        learner = OnlineLearner(client, registry, settings)
        for n in range(repeat):
            for event in buffer_events(rng, catalogue, users, settings.online_learning_buffer_size, T0 + n * 1000):
                learner.buffer.append_once(event)
            started = time.perf_counter()
            result = learner.update()
            samples.append((time.perf_counter() - started) * 1000)
            steps.append(result.update_ms or 0.0)
    client.flushdb()
    return {"catalogue": catalogue, "whole_update": timing_summary(samples), "step_inside": timing_summary(steps)}


def kinesis_record(event: Any, sequence: int) -> dict[str, Any]:
    return {
        "eventID": f"shardId-000000000000:{sequence}",
        "eventSource": "aws:kinesis",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/recloop-bench",
        "kinesis": {
            "data": base64.b64encode(event.to_record()).decode(),
            "partitionKey": event.user_id,
            "sequenceNumber": str(sequence),
            "kinesisSchemaVersion": "1.0",
            "approximateArrivalTimestamp": event.timestamp,
        },
    }


class AcceptingS3:
    """An S3 client whose puts succeed at once: isolates RecLoop's own per-record cost from S3's latency."""

    class exceptions:  # noqa: N801 (botocore's attribute name)
        from botocore.exceptions import ClientError

    def put_object(self, **_: Any) -> dict[str, Any]:
        return {}


def bench_kinesis_batches(redis_url: str, batches: int, batch_size: int = 100, s3_kind: str = "moto") -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from recloop.adapters.objects import ObjectStore
    from recloop.adapters.queues import Queue
    from recloop.adapters.redis import connect
    from recloop.core.settings import Settings
    from recloop.features.store import FeatureStore
    from recloop.handlers.stream import process_kinesis_batch
    from recloop.ingest.consumer import DeadLetters, StreamConsumer
    from recloop.learning.online.buffer import OnlineBuffer

    settings = Settings.from_env({"REDIS_URL": redis_url})
    client = connect(settings)
    client.flushdb()
    rng = np.random.default_rng(9)
    events = buffer_events(rng, 100_000, 100_000, batches * batch_size, T0)
    with mock_aws():
        s3: Any = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="recloop-bench")
        if s3_kind == "accepting":
            s3 = AcceptingS3()
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="recloop-bench-dlq")["QueueUrl"]
        consumer = StreamConsumer(
            FeatureStore(client, settings), ObjectStore(s3, "recloop-bench"), OnlineBuffer(client, settings)
        )
        dead_letters = DeadLetters(Queue(sqs, queue))
        seconds = []
        for b in range(batches):
            chunk = events[b * batch_size : (b + 1) * batch_size]
            batch = {"Records": [kinesis_record(e, b * batch_size + n) for n, e in enumerate(chunk)]}
            started = time.perf_counter()
            response = process_kinesis_batch(batch, consumer, dead_letters)
            seconds.append(time.perf_counter() - started)
            if response["batchItemFailures"]:
                raise RuntimeError(f"batch {b} reported failures: {response}")
    client.flushdb()
    per_batch_ms = [s * 1000 for s in seconds]
    return {
        "batch_size": batch_size,
        "batches": batches,
        "per_batch": timing_summary(per_batch_ms),
        "records_per_s": round(batch_size * batches / sum(seconds), 1),
        "s3": {"moto": "moto in process (CPU-bound emulation dominates)", "accepting": "puts accepted at once"}[
            s3_kind
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.online_update", description=__doc__)
    parser.add_argument("--catalogues", default="10000,100000")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    catalogues = [int(c) for c in args.catalogues.split(",")]
    report: dict[str, Any] = {"python": sys.version.split()[0], "update": [], "update_with_publication": []}
    report["cpu_reference_ms"] = {"before": round(cpu_reference_ms(), 3)}
    with redis_server() as url:
        configure(url)
        for catalogue in catalogues:
            log(f"online step, catalogue {catalogue}")
            report["update"].append(bench_update(catalogue, args.users, 1000, args.repeat))
        log("online step of an lgbm champion (MF step and ranker refit)")
        report["update_lgbm"] = bench_lgbm_update(catalogues[-1], args.users, 600, max(5, args.repeat // 2))
        log("whole update with publication (moto S3)")
        report["update_with_publication"].append(
            bench_update_with_publication(url, catalogues[0], args.users, max(5, args.repeat // 3))
        )
        log("Kinesis batch handler")
        report["kinesis_batch_handler"] = {
            "with_moto_s3": bench_kinesis_batches(url, args.batches),
            "archive_writes_free": bench_kinesis_batches(url, args.batches, s3_kind="accepting"),
        }
    report["cpu_reference_ms"]["after"] = round(cpu_reference_ms(), 3)
    worst = max(u["step"]["p99_ms"] for u in report["update"])
    report["targets_met"] = {
        "online_update_1000_events_p99_le_100ms": worst <= 100.0,
        "online_update_lgbm_1000_events_p99_le_100ms": report["update_lgbm"]["step_with_ranker_refit"]["p99_ms"]
        <= 100.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
