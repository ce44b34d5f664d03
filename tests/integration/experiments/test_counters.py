"""Experiment counters against a real Redis: impressions with latency, outcomes counted once, reset."""

from __future__ import annotations

import threading

import redis

from recloop.adapters.redis import Keys
from recloop.experiments.counters import ArmCounts, ExperimentCounters

EXPERIMENT = "exp_00000000000a"


def test_impressions_count_with_mean_and_p95_latency(redis_client: redis.Redis) -> None:
    counters = ExperimentCounters(redis_client)
    for latency in range(1, 101):
        counters.record_impression(EXPERIMENT, "control", float(latency))
    counters.record_impressions(EXPERIMENT, "challenger", [10.0] * 50)
    counts = counters.counts(EXPERIMENT, ["control", "challenger", "absent"])
    assert counts["control"].impressions == 100
    assert counts["control"].latency_ms_sum == 5050.0
    assert 95 <= counts["control"].latency_p95_ms <= 95 * 1.1  # 10%-wide buckets
    assert counts["challenger"].impressions == 50
    assert counts["absent"] == ArmCounts()


def test_an_outcome_counts_once_whatever_the_redeliveries(redis_client: redis.Redis) -> None:
    counters = ExperimentCounters(redis_client, claim_ttl_seconds=3600)
    assert counters.record_outcome(EXPERIMENT, "control", "ev-1", positive=True)
    assert not counters.record_outcome(EXPERIMENT, "control", "ev-1", positive=True)
    assert counters.record_outcome(EXPERIMENT, "control", "ev-2", positive=False)
    assert counters.record_outcomes(EXPERIMENT, "control", [("ev-1", True), ("ev-3", True), ("ev-3", True)]) == 1
    counts = counters.counts(EXPERIMENT, ["control"])["control"]
    assert (counts.conversions, counts.negatives) == (2, 1)
    assert 0 < redis_client.ttl(Keys.experiment_outcome(EXPERIMENT, "ev-1")) <= 3600


def test_concurrent_retries_of_one_outcome_count_once(redis_client: redis.Redis) -> None:
    counters = ExperimentCounters(redis_client)
    results: list[bool] = []

    def retry() -> None:
        results.append(counters.record_outcome(EXPERIMENT, "challenger", "ev-race", positive=True))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert counters.counts(EXPERIMENT, ["challenger"])["challenger"].conversions == 1


def test_reset_clears_only_that_experiment(redis_client: redis.Redis) -> None:
    counters = ExperimentCounters(redis_client)
    other = "exp_00000000000b"
    for experiment_id in (EXPERIMENT, other):
        counters.record_impression(experiment_id, "control", 5.0)
        counters.record_outcome(experiment_id, "control", "ev-1", positive=True)
    counters.reset(EXPERIMENT)
    assert counters.counts(EXPERIMENT, ["control"])["control"] == ArmCounts()
    assert counters.record_outcome(EXPERIMENT, "control", "ev-1", positive=True)  # the claim went too
    assert counters.counts(other, ["control"])["control"].impressions == 1


def test_every_key_of_an_experiment_shares_one_cluster_slot() -> None:
    keys = [
        Keys.experiment_arm(EXPERIMENT, "control"),
        Keys.experiment_latency(EXPERIMENT, "challenger"),
        Keys.experiment_outcome(EXPERIMENT, "ev-1"),
    ]
    assert {key.split("}")[0] + "}" for key in keys} == {f"{{x:{EXPERIMENT}}}"}


def test_a_batch_records_impressions_and_outcomes_of_several_variants_in_one_call(redis_client: redis.Redis) -> None:
    counters = ExperimentCounters(redis_client)
    latencies = {"control": [10.0, 12.0], "challenger": [30.0]}
    outcomes = {"control": [("ev-1", True), ("ev-2", False)], "challenger": [("ev-3", True), ("ev-1", True)]}
    # An outcome id is claimed once per experiment: the challenger's ev-1 is a repeat.
    assert counters.record_batch(EXPERIMENT, latencies, outcomes) == 3
    assert counters.record_batch(EXPERIMENT, {}, outcomes) == 0
    assert counters.record_batch(EXPERIMENT, {}, {}) == 0
    counts = counters.counts(EXPERIMENT, ["control", "challenger"])
    assert (counts["control"].impressions, counts["control"].conversions, counts["control"].negatives) == (2, 1, 1)
    assert (counts["challenger"].impressions, counts["challenger"].conversions) == (1, 1)
