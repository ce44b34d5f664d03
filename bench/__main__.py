"""`python -m bench`: latency and throughput of the event and recommend paths and of one online update (JSON).

Usage: python -m bench [--catalogues 10000,100000] [--events N] [--repeat N]

The section `experiments` (bench.experiments_latency) runs on the largest catalogue.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import T0, configure, log, redis_server, seed, timings_ms
from bench.experiments_latency import bench_experiment_latency
from bench.experiments_latency import targets as experiment_targets
from recloop.learning.evaluation import timing_summary

ROOT = Path(__file__).resolve().parents[1]


def raw_redis_round_trip(client: Any, repeat: int) -> dict[str, float]:
    return timing_summary(timings_ms(lambda _: client.ping(), repeat))


RANKER_TRAINING_EVENTS = 40_000


def bench_lgbm_recommend(store: Any, settings: Any, events: list[Any], users: int, repeat: int) -> dict[str, Any]:
    """Recommend with an `lgbm` champion: MF over the whole catalogue, the ranker re-ranking ~300 candidates."""
    from recloop.learning.training import RankerHyperparameters, train_ranker
    from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
    from recloop.models.loading import load_model
    from recloop.models.mf import MFHyperparameters, train_mf
    from recloop.models.ranker import RankerModel
    from recloop.serving.champion import TrainedModel
    from recloop.serving.recommender import Recommender

    started = time.perf_counter()
    mf = train_mf(events, MFHyperparameters())
    ranker, _ = train_ranker(events[-RANKER_TRAINING_EVENTS:], settings, MFHyperparameters(), RankerHyperparameters())
    model = RankerModel(mf, ranker.booster)
    trained = time.perf_counter() - started
    files = model.to_bundle(ModelMetadata(version="lgbm-bench", kind=ModelKind.LGBM)).serialised()
    started = time.perf_counter()
    loaded = load_model(ModelBundle.from_files(files))
    load_seconds = time.perf_counter() - started
    served = TrainedModel("lgbm-bench", ModelKind.LGBM, loaded, store, settings)
    recommender = Recommender(store, settings, lambda: served)
    candidates = [len(recommender.candidates(f"u{(n * 7919) % users}", 10)[1]) for n in range(200)]
    result = bench_recommend(recommender, users, repeat)
    return {
        "known_user": result["known_user"],
        "mean_candidates_reranked": round(float(np.mean(candidates)), 1),
        "model_load_seconds": round(load_seconds, 3),
        "model_train_seconds": round(trained, 1),
        "bundle_mb": round(sum(len(v) for v in files.values()) / 1e6, 2),
    }


def bench_feature_updates(store: Any, repeat: int) -> dict[str, Any]:
    from recloop.handlers.http.schemas import InteractionIn

    rng = np.random.default_rng(11)
    users, items = rng.integers(0, 20_000, size=repeat + 100), rng.integers(0, 100_000, size=repeat + 100)
    events = [
        InteractionIn(user_id=f"b{users[n]}", item_id=f"i{items[n]}", event_type="click", timestamp=T0 + n).to_event(
            T0 + n
        )
        for n in range(repeat + 100)
    ]
    single = timing_summary(timings_ms(lambda n: store.apply(events[n]), repeat, warmup=100))
    batch_events = [
        InteractionIn(user_id=f"c{n % 5000}", item_id=f"i{n % 30_000}", event_type="view", timestamp=T0 + n).to_event(
            T0 + n
        )
        for n in range(20_000)
    ]
    started = time.perf_counter()
    for start in range(0, len(batch_events), 500):
        store.apply_many(batch_events[start : start + 500])
    batched = len(batch_events) / (time.perf_counter() - started)
    return {
        "feature_update": single,
        "feature_update_events_per_s_sequential": round(1000 / single["mean_ms"], 1),
        "feature_update_events_per_s_batches_of_500": round(batched, 1),
    }


def bench_event_handler(repeat: int) -> dict[str, Any]:
    """The whole POST /event handler, with Kinesis emulated in-process by moto (its cost included)."""
    import boto3
    from moto import mock_aws

    from local.inprocess import ApiClient

    # The handler prints Powertools' metric records (EMF) to stdout; keep stdout for the JSON report.
    with mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        boto3.client("kinesis", region_name="us-east-1").create_stream(StreamName="recloop-bench", ShardCount=1)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="recloop-bench")
        api = ApiClient()
        samples = timings_ms(
            lambda n: api.post_event(user_id=f"h{n % 3000}", item_id=f"i{n % 9000}", event_type="click"), repeat
        )
        return {"event_handler_with_moto_kinesis": timing_summary(samples)}


def bench_recommend(recommender: Any, users: int, repeat: int) -> dict[str, Any]:
    known = timings_ms(lambda n: recommender.recommend(f"u{(n * 7919) % users}", 10), repeat)
    cold = timings_ms(lambda n: recommender.recommend(f"nobody{n}", 10), repeat)
    return {"known_user": timing_summary(known), "cold_user": timing_summary(cold)}


def import_and_init_seconds(function: str) -> dict[str, Any]:
    """Fresh interpreter: import the handler module (Powertools, pydantic, redis, the resolver)."""
    built = ROOT / ".aws-sam" / "build"
    code_dir = (
        next(
            (
                d
                for d in built.glob("*")
                if d.is_dir() and (d / "app.py").exists() and function.replace("_", "").lower() in d.name.lower()
            ),
            None,
        )
        if built.exists()
        else None
    )
    if code_dir is not None:
        layers = [str(d / "python") for d in built.glob("*Layer*") if (d / "python").exists()]
        # The managed runtime's boto3 (installed for the local stack), as Lambda provides it.
        runtime = ROOT / ".local" / "lambda-runtime"
        path = os.pathsep.join([str(code_dir), *layers, *([str(runtime)] if runtime.exists() else [])])
        source = "sam build output"
    else:
        code_dir = ROOT / "functions" / function
        path = str(code_dir)
        source = "source tree + virtualenv"
    script = "import time;t=time.perf_counter();import app;print(time.perf_counter()-t)"
    # -S: no site-packages, only the package and its layers, as on Lambda (boto3 is imported on first use).
    flags = ["-S"] if source == "sam build output" else []
    env = {**os.environ, "PYTHONPATH": path}
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, *flags, "-c", script], cwd=code_dir, env=env, capture_output=True, text=True, check=True
        )
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return {"seconds_min": round(min(runs), 4), "seconds_max": round(max(runs), 4), "from": source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalogues", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--interactions-per-item", type=float, default=2.0)
    args = parser.parse_args()

    report: dict[str, Any] = {"python": sys.version.split()[0], "machine": os.uname().machine, "cores": os.cpu_count()}
    with redis_server() as url:
        configure(url)
        from recloop.adapters.redis import connect
        from recloop.core.settings import Settings
        from recloop.features.store import FeatureStore
        from recloop.serving.recommender import Recommender

        settings = Settings.from_env()
        client = connect(settings)
        report["redis_round_trip"] = raw_redis_round_trip(client, args.repeat)
        log("redis round trip done")

        client.flushdb()
        report["ingest"] = bench_feature_updates(FeatureStore(client, settings), args.repeat)
        report["ingest"].update(bench_event_handler(min(args.repeat, 1000)))
        log("ingest done")

        report["recommend"] = {}
        catalogues = [int(c) for c in args.catalogues.split(",")]
        for catalogue in catalogues:
            client.flushdb()
            users = max(1000, catalogue // 5)
            store = FeatureStore(client, settings)
            started = time.perf_counter()
            events = seed(store, catalogue, int(catalogue * args.interactions_per_item), users)
            seeded = time.perf_counter() - started
            result = bench_recommend(Recommender(store, settings), users, args.repeat)
            result["lgbm_champion"] = bench_lgbm_recommend(store, settings, events, users, args.repeat)
            result["catalogue_items"] = catalogue
            result["seed_interactions"] = int(catalogue * args.interactions_per_item)
            result["seed_seconds"] = round(seeded, 2)
            report["recommend"][str(catalogue)] = result
            log(f"recommend at {catalogue} items done")
            if catalogue == max(catalogues):  # on the same seeded catalogue: two lgbm versions in an experiment
                report["experiments"] = bench_experiment_latency(
                    client, settings, events, users, catalogue=catalogue, repeat=args.repeat
                )
                log("experiment latency done")
        client.flushdb()

    from bench.online_update import bench_update

    report["online_update"] = bench_update(100_000, 100_000, settings.online_learning_buffer_size, repeat=30)
    log("online update done")
    report["import_and_init"] = {
        fn: import_and_init_seconds(fn) for fn in ("recommend", "event", "ops", "mlops", "online_update")
    }
    targets = {
        "event_feature_update_p99_ms<=3": report["ingest"]["feature_update"]["p99_ms"] <= 3,
        "recommend_p99_ms_at_100k<=15": report["recommend"].get("100000", {}).get("known_user", {}).get("p99_ms", 1e9)
        <= 15,
        "recommend_lgbm_p99_ms_at_100k<=20": report["recommend"]
        .get("100000", {})
        .get("lgbm_champion", {})
        .get("known_user", {})
        .get("p99_ms", 1e9)
        <= 20,
        "recommend_import_init_s<=1": report["import_and_init"]["recommend"]["seconds_max"] <= 1,
        "online_update_1000_events_p99_ms<=100": report["online_update"]["step"]["p99_ms"] <= 100,
    }
    targets.update(experiment_targets(report["experiments"]))
    report["targets_met"] = targets
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
