"""Recommend and event latency while an experiment of two `lgbm` versions runs, against the same paths without one.

`python -m bench.experiments_latency [--catalogue 100000] [--repeat 2000]` (JSON on stdout); `python -m bench`
reports the same section as `experiments`.

One run, one Redis, one catalogue: the recommend and event handlers are called in process (local.inprocess.ApiClient),
S3 and Kinesis emulated by moto. An `lgbm` champion serves first. Then a second `lgbm` (trained with other seeds on
the same interactions) is registered. Then blocks alternate, `rounds` of each: requests with no experiment, and
requests while an experiment of both versions at 100% of traffic runs (created, started and stopped through
ExperimentService, with the default allocation strategy), so that a busy spell of the machine falls on both
sides rather than on one. The events timed are conversions of items the user was just recommended, half naming
their recommendation and half left to the latest-impression lookup, so that with the experiment running
attribution credits each of them. The ratios compare timings of the same run; the Redis round trip and the numpy
reference (bench.common.cpu_reference_ms), measured before and after, say how busy the machine was.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import configure, cpu_reference_ms, log, redis_server, seed, timings_ms
from recloop.learning.evaluation import timing_summary

RANKER_TRAINING_EVENTS = 40_000
CONVERSIONS = ("click", "like", "purchase")
CONTROL, CHALLENGER = "lgbm-control", "lgbm-challenger"
# The budget of the acceptance: each path's p99 with the experiment within this factor of its p99 without.
MAX_P99_RATIO = 1.5


def summary(samples: list[float]) -> dict[str, float]:
    result = timing_summary(samples) or {}
    return {**result, "p95_ms": round(float(np.percentile(samples, 95)), 4)}


def lgbm_bundle(events: list[Any], settings: Any, version: str, mf_seed: int, ranker_seed: int) -> Any:
    """An `lgbm` model as the latency benchmark trains it (MF over the catalogue, ranker on the latest events)."""
    from recloop.learning.training import RankerHyperparameters, train_ranker
    from recloop.models.bundle import ModelKind, ModelMetadata
    from recloop.models.mf import MFHyperparameters, train_mf
    from recloop.models.ranker import RankerModel

    mf_parameters = MFHyperparameters(seed=mf_seed)
    mf = train_mf(events, mf_parameters)
    ranker, _ = train_ranker(
        events[-RANKER_TRAINING_EVENTS:], settings, mf_parameters, RankerHyperparameters(seed=ranker_seed)
    )
    return RankerModel(mf, ranker.booster).to_bundle(ModelMetadata(version=version, kind=ModelKind.LGBM))


class Traffic:
    """Known users' recommend requests, and click/like/purchase events of the items each one was recommended."""

    def __init__(self, api: Any, users: int) -> None:
        self.api = api
        self.users = users
        self.replies: list[dict[str, Any]] = []
        self.failures: Counter[int] = Counter()
        self.offset = 0  # each block asks for other users

    def recommend(self, n: int) -> None:
        status, reply = self.api.recommend(f"u{((self.offset + n) * 7919) % self.users}", 10)
        if status != 200:
            self.failures[status] += 1
            return
        self.replies.append(reply)

    def convert(self, n: int) -> None:
        reply = self.replies[n % len(self.replies)]
        body = {
            "user_id": reply["user_id"],
            "item_id": reply["items"][n % len(reply["items"])]["item_id"],
            "event_type": CONVERSIONS[n % len(CONVERSIONS)],
        }
        if n % 2 == 0:
            body["recommendation_id"] = reply["recommendation_id"]
        status, _ = self.api.post_event(**body)
        if status != 202:
            self.failures[status] += 1

    def measure(self, repeat: int, into: Block) -> None:
        """One block: `repeat` recommend requests, then `repeat` conversions of what they recommended."""
        self.replies.clear()
        into.recommend += timings_ms(self.recommend, repeat)
        into.served.update(
            f"{r['variant']}:{r['model_version']}" if r["variant"] else r["model_version"] for r in self.replies
        )
        into.event += timings_ms(self.convert, repeat)
        self.offset += repeat + 50


@dataclass
class Block:
    """The timings of one side, over its blocks."""

    recommend: list[float] = field(default_factory=list)
    event: list[float] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        return {"recommend": summary(self.recommend), "event": summary(self.event), "served": dict(self.served)}


def ratio(with_experiment: dict[str, Any], without: dict[str, Any], path: str, figure: str) -> float:
    return round(with_experiment[path][figure] / without[path][figure], 3)


def bench_experiment_latency(
    client: Any, settings: Any, events: list[Any], users: int, *, catalogue: int, repeat: int, rounds: int = 4
) -> dict[str, Any]:
    """The section, on a Redis already seeded with `events` over `catalogue` items (bench.common.seed)."""
    import boto3
    from moto import mock_aws

    from local.inprocess import ApiClient
    from recloop.container import get_container, reset_container
    from recloop.experiments.service import ExperimentSpec, VariantSpec

    reference: dict[str, Any] = {
        "redis_round_trip_before": timing_summary(timings_ms(lambda _: client.ping(), repeat)),
        "cpu_reference_ms_before": round(cpu_reference_ms(), 3),
    }
    started = time.perf_counter()
    control = lgbm_bundle(events, settings, CONTROL, mf_seed=17, ranker_seed=23)
    challenger = lgbm_bundle(events, settings, CHALLENGER, mf_seed=101, ranker_seed=202)
    trained = time.perf_counter() - started
    log("experiment latency: two lgbm versions trained")

    # The handlers print Powertools' metric records (EMF) to stdout; keep stdout for the JSON report.
    with mock_aws(), contextlib.redirect_stdout(io.StringIO()):
        reset_container()  # clients made now, inside the emulation
        boto3.client("kinesis", region_name="us-east-1").create_stream(StreamName="recloop-bench", ShardCount=1)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="recloop-bench")
        services = get_container()
        services.registry.register(control)
        services.registry.register(challenger)
        services.registry.promote(CONTROL, reason="experiment latency benchmark")
        traffic = Traffic(ApiClient(), users)
        spec = ExperimentSpec(
            name="lgbm against an lgbm trained with other seeds",
            variants=[
                VariantSpec(name="control", model_version=CONTROL),
                VariantSpec(name="challenger", model_version=CHALLENGER),
            ],
            traffic_percentage=100.0,
        )
        without, running = Block(), Block()
        arms: Counter[str] = Counter()
        conversions: Counter[str] = Counter()
        block = max(1, repeat // rounds)
        for round_number in range(rounds):
            traffic.measure(block, without)
            experiment = services.experiments.create(spec)
            services.experiments.start(experiment.experiment_id)
            time.sleep(services.running_experiments.seconds)  # every instance sees a start within this
            traffic.measure(block, running)
            for name, arm in services.experiment_counters.counts(
                experiment.experiment_id, ["control", "challenger"]
            ).items():
                arms[name] += arm.impressions
                conversions[name] += arm.conversions
            loaded = services.experiment_router.models.loaded
            services.experiments.stop(experiment.experiment_id)
            time.sleep(services.running_experiments.seconds)  # and a stop
            log(f"experiment latency: round {round_number + 1} of {rounds} done")
        reset_container()
        without_experiment, with_experiment = without.report(), running.report()

    reference["redis_round_trip_after"] = timing_summary(timings_ms(lambda _: client.ping(), repeat))
    reference["cpu_reference_ms_after"] = round(cpu_reference_ms(), 3)
    if traffic.failures:
        raise RuntimeError(f"requests failed during the benchmark: {dict(traffic.failures)}")
    return {
        "catalogue_items": catalogue,
        "allocation_strategy": experiment.allocation_strategy.value,
        "models_train_seconds": round(trained, 1),
        "rounds": rounds,
        "without_experiment": without_experiment,
        "with_experiment": {
            **with_experiment,
            "impressions_counted": dict(arms),
            "conversions_attributed": dict(conversions),
            "versions_loaded_besides_champion": loaded,
        },
        "recommend_p99_ratio": ratio(with_experiment, without_experiment, "recommend", "p99_ms"),
        "recommend_p50_ratio": ratio(with_experiment, without_experiment, "recommend", "p50_ms"),
        "event_p99_ratio": ratio(with_experiment, without_experiment, "event", "p99_ms"),
        "event_p50_ratio": ratio(with_experiment, without_experiment, "event", "p50_ms"),
        "reference": reference,
    }


def targets(section: dict[str, Any]) -> dict[str, bool]:
    counted = section["with_experiment"]["impressions_counted"]
    both_served = all(counted.get(name, 0) > 0 for name in ("control", "challenger"))
    return {
        f"recommend_p99_with_experiment/without<={MAX_P99_RATIO}": section["recommend_p99_ratio"] <= MAX_P99_RATIO,
        f"event_p99_with_attribution/without<={MAX_P99_RATIO}": section["event_p99_ratio"] <= MAX_P99_RATIO,
        "experiment_served_both_variants": both_served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalogue", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--interactions-per-item", type=float, default=2.0)
    args = parser.parse_args()
    with redis_server() as url:
        configure(url)
        from recloop.adapters.redis import connect
        from recloop.core.settings import Settings
        from recloop.features.store import FeatureStore

        settings = Settings.from_env()
        client = connect(settings)
        client.flushdb()
        users = max(1000, args.catalogue // 5)
        events = seed(
            FeatureStore(client, settings), args.catalogue, int(args.catalogue * args.interactions_per_item), users
        )
        log("experiment latency: catalogue seeded")
        section = bench_experiment_latency(
            client, settings, events, users, catalogue=args.catalogue, repeat=args.repeat
        )
    section["targets_met"] = targets(section)
    print(json.dumps(section, indent=2))


if __name__ == "__main__":
    main()
