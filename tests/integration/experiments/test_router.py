"""Experiments on the recommend path: two registry versions serve side by side, users are assigned by hash, the
variants' models are cached (bounded), and a failing variant falls back to the champion."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.settings import AllocationStrategy, Settings
from recloop.experiments.counters import ExperimentCounters
from recloop.experiments.model import Experiment, ExperimentStatus, Variant
from recloop.experiments.router import ExperimentRouter, RunningExperiments, VersionModels
from recloop.experiments.store import ExperimentStore
from recloop.features.store import FeatureStore
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.models.mf import MFHyperparameters, train_mf
from recloop.registry.model_registry import ModelRegistry
from recloop.serving.champion import ChampionProvider
from recloop.serving.recommender import Recommender
from tests.support.environment import TEST_BUCKET
from tests.support.learning import trained

SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
USERS = [f"user{n}" for n in range(40)]


def an_experiment(control: str, challenger: str, **fields: Any) -> Experiment:
    values: dict[str, Any] = {
        "experiment_id": "exp_0000000000ab",
        "name": "mf against a smaller mf",
        "variants": [
            Variant(variant_id="var_0", name="control", model_version=control),
            Variant(variant_id="var_1", name="challenger", model_version=challenger),
        ],
        "allocation_strategy": AllocationStrategy.FIXED_SPLIT,
        "traffic_percentage": 100.0,
        "status": ExperimentStatus.RUNNING,
        "started_at": "2026-11-30T12:00:00+00:00",
        "salt": "fixed-salt",
    }
    return Experiment(**(values | fields))


class Serving:
    """A recommend instance's parts, over a registry holding a champion (mf-a) and a challenger (mf-b)."""

    def __init__(self, aws: dict[str, Any], redis_client: redis.Redis, cache_dir: Path) -> None:
        self.aws = aws
        self.registry = ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=0)
        mf, history = trained()
        self.registry.register(mf.to_bundle(ModelMetadata(version="mf-a", kind=ModelKind.MF)))
        smaller = train_mf(history, MFHyperparameters(factors=4, iterations=4))
        self.registry.register(smaller.to_bundle(ModelMetadata(version="mf-b", kind=ModelKind.MF)))
        self.registry.promote("mf-a", reason="test champion")
        self.store = FeatureStore(redis_client, SETTINGS, historical=True)
        self.store.apply_many(history)
        self.champion = ChampionProvider(
            lambda: self.registry, self.store, SETTINGS, check_seconds=0, cache_dir=cache_dir
        )
        self.recommender = Recommender(self.store, SETTINGS, self.champion)
        self.experiments = ExperimentStore(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, running_cache_seconds=0)
        self.counters = ExperimentCounters(redis_client)
        self.models = VersionModels(self.champion)

    def router(self, seed: int = 0) -> ExperimentRouter:
        running = RunningExperiments(self.experiments.running, seconds=0)
        return ExperimentRouter(running, self.counters, self.models, rng=random.Random(seed))


@pytest.fixture
def serving(aws: dict[str, Any], redis_client: redis.Redis, tmp_path: Path) -> Serving:
    return Serving(aws, redis_client, tmp_path)


def test_two_versions_serve_side_by_side_each_user_always_by_the_same_variant(
    serving: Serving, redis_client: redis.Redis
) -> None:
    serving.champion()  # the instance serves mf-a
    serving.experiments.create(an_experiment("mf-a", "mf-b"))
    router = serving.router()

    served: dict[str, str] = {}
    for user in USERS:
        assignment = router.route(user)
        assert assignment is not None
        result = serving.recommender.recommend(user, 3, arm=assignment.arm)
        assert (result.experiment_id, result.variant) == ("exp_0000000000ab", assignment.variant.name)
        assert result.model_version == assignment.variant.model_version  # every test user is known to both models
        log = redis_client.hgetall(Keys.recommendation_log(user, result.recommendation_id))
        assert (log["experiment_id"], log["variant"], log["model_version"]) == (
            "exp_0000000000ab",
            assignment.variant.name,
            result.model_version,
        )
        served[user] = result.model_version
    assert set(served.values()) == {"mf-a", "mf-b"}
    assert serving.models.loaded == ["mf-b"]  # the champion's model is shared, not loaded twice

    again = serving.router(seed=1)  # another instance: the same users, the same variants
    assert {user: again.route(user).variant.model_version for user in USERS} == served


def test_users_outside_the_traffic_share_and_requests_without_an_experiment_get_the_champion(
    serving: Serving,
) -> None:
    serving.champion()
    router = serving.router()
    assert router.route("user1") is None
    assert serving.recommender.recommend("user1", 3).model_version == "mf-a"

    serving.experiments.create(an_experiment("mf-a", "mf-b", traffic_percentage=30.0))
    entered = [user for user in USERS if router.route(user) is not None]
    assert 0 < len(entered) < len(USERS)


def test_impressions_are_counted_per_served_list_with_the_recommendation_log(serving: Serving) -> None:
    serving.champion()
    serving.experiments.create(an_experiment("mf-a", "mf-b"))
    router = serving.router()
    variants = []
    for user in USERS[:10]:
        assignment = router.route(user)
        result = serving.recommender.recommend(user, 3, arm=assignment.arm)
        assert (result.experiment_id, result.variant) == ("exp_0000000000ab", assignment.variant.name)
        variants.append(assignment.variant.name)
    serving.recommender.recommend(USERS[0], 3, arm=router.route(USERS[0]).arm, log=False)  # a replay counts nothing
    counts = serving.counters.counts("exp_0000000000ab", ["control", "challenger"])
    assert {name: arm.impressions for name, arm in counts.items()} == {
        "control": variants.count("control"),
        "challenger": variants.count("challenger"),
    }
    served = [arm for arm in counts.values() if arm.impressions]
    assert all(0 < arm.latency_ms_sum / arm.impressions < 1000 for arm in served)  # each list's time to rank


def test_loaded_versions_are_bounded_least_recently_used_first(serving: Serving) -> None:
    mf, _ = trained()
    for version in ("mf-c", "mf-d"):
        serving.registry.register(mf.to_bundle(ModelMetadata(version=version, kind=ModelKind.MF)))
    models = VersionModels(serving.champion, capacity=2)
    for version in ("mf-b", "mf-c", "mf-b", "mf-d"):
        assert models.get(version).version == version
    assert models.loaded == ["mf-b", "mf-d"]  # mf-c, least recently used, was let go


def test_a_variant_that_does_not_load_serves_the_champion_and_is_retried_later(
    serving: Serving, aws: dict[str, Any]
) -> None:
    mf, _ = trained()
    bundle = mf.to_bundle(ModelMetadata(version="mf-broken", kind=ModelKind.MF))
    serving.registry.register(bundle)
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/mf-broken/mf.npz", Body=b"damaged")
    serving.champion()
    serving.experiments.create(an_experiment("mf-broken", "mf-broken"))
    now = [0.0]
    serving.models = VersionModels(serving.champion, retry_seconds=30, clock=lambda: now[0])
    router = serving.router()

    assert router.route("user1") is None  # the champion serves instead
    assert serving.recommender.recommend("user1", 3).model_version == "mf-a"
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/mf-broken/mf.npz", Body=bundle.serialised()["mf.npz"])
    now[0] = 29.0
    assert router.route("user1") is None  # not tried again on every request
    now[0] = 31.0
    assert router.route("user1").model.version == "mf-broken"
