"""Trained models behind the recommender: MF fold-in, the ranker's point-in-time rows, champion serving."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.handlers.http.schemas import InteractionIn
from recloop.learning.training import RankerHyperparameters, ranker_rows, train_candidate
from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
from recloop.models.mf import MFHyperparameters, train_mf
from recloop.models.ranker import FEATURE_NAMES
from recloop.registry.model_registry import ModelRegistry
from recloop.serving.champion import ChampionProvider, TrainedModel
from recloop.serving.recommender import Recommender
from tests.support.environment import TEST_BUCKET

T0 = 1_700_000_000.0
SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
SMALL_MF = MFHyperparameters(factors=8, iterations=6)


def event(user: str, item: str, kind: str = "like", t: float = T0, n: int = 0) -> Interaction:
    return InteractionIn(
        user_id=user, item_id=item, event_type=kind, timestamp=t, event_id=f"{user}-{item}-{n}-{t}"
    ).to_event(t)


def two_tastes(users: int = 30, t0: float = T0) -> list[Interaction]:
    """Half the users like items a0..a5, the other half b0..b5."""
    events = []
    for u in range(users):
        group = "a" if u % 2 else "b"
        for n in range(6):
            events.append(event(f"user{u}", f"{group}{n}", "like", t0 + u * 100 + n))
    return sorted(events, key=lambda e: e.timestamp)


def test_mf_folds_in_a_new_user_after_one_event(redis_client: redis.Redis) -> None:
    history = two_tastes()
    mf = train_mf(history, SMALL_MF)
    store = FeatureStore(redis_client, SETTINGS, historical=True)
    store.apply_many(history)
    served = TrainedModel("mf-test", ModelKind.MF, mf, store, SETTINGS)
    recommender = Recommender(store, SETTINGS, lambda: served)

    assert recommender.recommend("newcomer", 3).model_version == "trending"  # nothing to fold in yet
    store.apply(event("newcomer", "a0", "purchase", T0 + 10_000))
    result = recommender.recommend("newcomer", 5)
    assert result.model_version == "mf-test" and result.cold_start is False
    assert {i.item_id for i in result.items} == {"a1", "a2", "a3", "a4", "a5"}


def test_mf_bundle_round_trip_scores_identically() -> None:
    mf = train_mf(two_tastes(), SMALL_MF)
    bundle = mf.to_bundle(ModelMetadata(version="mf-x", kind=ModelKind.MF))
    again = type(mf).from_bundle(ModelBundle.from_files(bundle.serialised()))
    vector = mf.fold_in(["b1"], [1.0])
    assert np.allclose(mf.scores(vector, ["b2", "a2"]), again.scores(vector, ["b2", "a2"]))


def test_ranker_rows_hold_features_as_they_were_before_each_event() -> None:
    """No leakage: the labelled item's features count only events before the labelled one."""
    history = two_tastes()
    target = "a1"
    before = sum(1 for e in history if e.item_id == target)
    future = [event(f"late{n}", target, "purchase", T0 + 60_000 + n) for n in range(10)]
    # A new group-a user likes a0, then buys a1: the one labelled query; ten later purchases of a1 follow.
    stream = [
        *history,
        event("fresh", "a0", "like", T0 + 50_000),
        event("fresh", target, "purchase", T0 + 50_100),
        *future,
    ]
    mf = train_mf(history, SMALL_MF)
    params = RankerHyperparameters(negatives_per_query=5, max_queries=100)
    rows, labels, groups = ranker_rows(stream, mf, SETTINGS, params, label_start=len(history) + 1)
    assert groups and labels[0] == 1.0  # the only labelled query in the window
    positive = dict(zip(FEATURE_NAMES, rows[0], strict=True))
    assert positive["item_events_log"] == pytest.approx(np.log1p(before))  # not before + 1, not before + 11
    assert positive["item_idle_days"] == pytest.approx(
        (T0 + 50_100 - max(e.timestamp for e in history if e.item_id == target)) / 86_400
    )
    assert positive["user_events_log"] == pytest.approx(np.log1p(1))  # only the user's first event, not this one


def test_training_pipeline_evaluates_candidate_and_champion_on_the_same_holdout() -> None:
    events = two_tastes(users=60) + [
        event(f"user{u}", f"{'a' if u % 2 else 'b'}{n}", "like", T0 + 20_000 + u * 10 + n)
        for u in range(60)
        for n in range(6, 9)
    ]
    first = train_candidate(ModelKind.MF, events, SETTINGS, "mf-1", holdout_fraction=0.2, mf_params=SMALL_MF)
    assert first.champion_metrics is None and 0.0 <= first.candidate_metrics["hr_at_10"] <= 1.0
    second = train_candidate(
        ModelKind.MF,
        events,
        SETTINGS,
        "mf-2",
        holdout_fraction=0.2,
        mf_params=SMALL_MF,
        champion=first.bundle,
        parent_version="mf-1",
    )
    assert second.champion_metrics == pytest.approx(second.candidate_metrics)  # same data, same model, same holdout
    meta = second.bundle.metadata
    assert meta.parent_version == "mf-1" and meta.data_window.interactions == len(events)
    assert meta.metrics["holdout_hr_at_10"] == second.candidate_metrics["hr_at_10"]


@pytest.fixture
def registry(aws, redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=0)


def test_champion_provider_serves_the_champion_and_keeps_it_when_a_new_one_fails(
    registry: ModelRegistry, redis_client: redis.Redis, aws, tmp_path
) -> None:
    store = FeatureStore(redis_client, SETTINGS, historical=True)
    provider = ChampionProvider(lambda: registry, store, SETTINGS, check_seconds=0, cache_dir=tmp_path)
    assert provider() is None  # empty registry: the built-in scorers serve

    good = train_mf(two_tastes(), SMALL_MF).to_bundle(ModelMetadata(version="mf-good", kind=ModelKind.MF))
    registry.register(good)
    registry.promote("mf-good", reason="test")
    assert provider().version == "mf-good"
    assert (tmp_path / "mf-good" / "metadata.json").exists()

    bad = train_mf(two_tastes(), SMALL_MF).to_bundle(ModelMetadata(version="mf-bad", kind=ModelKind.MF))
    registry.register(bad)
    registry.promote("mf-bad", reason="test")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/mf-bad/mf.npz", Body=b"damaged after promotion")
    assert provider().version == "mf-good"  # the damaged version never takes over
    status = redis_client.hgetall(Keys.MODEL_STATUS)
    assert status["champion"] == "mf-bad" and status["serving"] == "mf-good" and "mf-bad" in status["error"]


def test_health_says_when_the_champion_could_not_be_loaded(api, redis_client: redis.Redis) -> None:
    reason = "mf-bad: ClientError: AccessDenied"
    redis_client.hset(Keys.MODEL_STATUS, mapping={"champion": "mf-bad", "serving": "mf-good", "error": reason})
    status, reply = api.request("ops", "GET", "/api/v1/health")
    assert status == 200 and reply["status"] == "degraded"
    assert (reply["model"]["champion"], reply["model"]["serving"]) == ("mf-bad", "mf-good")
    assert "mf-bad could not be loaded" in reply["model"]["error"] and "AccessDenied" not in reply["model"]["error"]


def test_recommend_endpoint_reports_the_serving_version(api) -> None:
    from recloop.container import get_container

    history = two_tastes()
    for start in range(0, len(history), 100):
        batch = [
            {"user_id": e.user_id, "item_id": e.item_id, "event_type": e.event_type.value, "timestamp": e.timestamp}
            for e in history[start : start + 100]
        ]
        api.request("event", "POST", "/api/v1/events/batch", {"events": batch})
    assert api.recommend("user1", 3)[1]["model_version"] == "cooccurrence"
    services = get_container()
    services.registry.register(
        train_mf(history, SMALL_MF).to_bundle(ModelMetadata(version="mf-live", kind=ModelKind.MF))
    )
    services.registry.promote("mf-live", reason="test")
    services.champion.check_seconds = 0
    assert api.recommend("user1", 3)[1]["model_version"] == "mf-live"
    assert api.recommend("never-seen", 3)[1]["model_version"] == "trending"
