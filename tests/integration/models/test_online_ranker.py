"""The ranker's online refit: served features logged at request time, labelled by what users did next."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightgbm
import numpy as np
import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.handlers.http.schemas import InteractionIn
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.learner import SERVED_LOG_PAGE, OnlineLearner
from recloop.learning.online.results import UpdateOutcome
from recloop.learning.online.update import apply_update, online_hyperparameters
from recloop.learning.training import RankerHyperparameters, train_ranker
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.models.leaf_refit import LeafTable
from recloop.models.mf import MFHyperparameters
from recloop.models.online_ranker import MAX_REFIT_QUERIES, ndcg_at_k, refit_ranker
from recloop.models.ranker import RankerModel
from recloop.registry.model_registry import ModelRegistry
from recloop.serving.champion import TrainedModel
from recloop.serving.recommender import Recommender
from recloop.serving.served_log import LOGGED_RANDOM, LOGGED_TOP, ServedFeatures, labelled_queries
from tests.support.environment import TEST_BUCKET

T0 = 1_700_000_000.0
FEATURES = 3


def event(user: str, item: str, t: float, kind: str = "like") -> Interaction:
    return InteractionIn(
        user_id=user, item_id=item, event_type=kind, timestamp=t, event_id=f"{user}-{item}-{t}"
    ).to_event(t)


def served(user: str, t: float, rows: np.ndarray, items: list[str] | None = None) -> ServedFeatures:
    items = items or [f"i{n}" for n in range(len(rows))]
    return ServedFeatures(user, t, "lgbm-x", tuple(items), rows.astype(np.float32))


# ---- the log -------------------------------------------------------------------------------------------------


def test_a_served_record_round_trips_and_keeps_the_best_and_some_others() -> None:
    rng = np.random.default_rng(1)
    items = [f"i{n}" for n in range(150)]
    rows = rng.normal(size=(150, 5)).astype(np.float32)
    scores = rng.normal(size=150)
    record = ServedFeatures.select("u1", T0, "lgbm-x", items=items, rows=rows, scores=scores)
    assert len(record.items) == LOGGED_TOP + LOGGED_RANDOM
    best = [items[n] for n in np.argsort(-scores)[:LOGGED_TOP]]
    assert list(record.items[:LOGGED_TOP]) == best
    assert np.array_equal(record.rows[0], rows[items.index(best[0])])
    again = ServedFeatures.decode(record.encode())
    assert again.items == record.items and again.user_id == "u1" and again.ts == T0
    assert np.array_equal(again.rows, record.rows)


def test_queries_are_labelled_by_positives_after_serving_within_the_window() -> None:
    rows = np.zeros((4, FEATURES))
    log = [served("u1", T0, rows), served("u2", T0, rows), served("u3", T0, rows)]
    events = [
        event("u1", "i2", T0 + 60),  # a positive on a served item: labels query 1
        event("u1", "i3", T0 + 60, "view"),  # a view is not a positive
        event("u2", "i1", T0 - 60),  # before serving: not caused by it
        event("u3", "i0", T0 + 3 * 86_400),  # outside the window
    ]
    queries = labelled_queries(reversed(log), events, window_seconds=86_400)
    assert queries.groups == [4] and queries.times == [T0]
    assert queries.labels.tolist() == [0, 0, 1, 0]


def test_the_log_is_read_newest_first_and_only_as_far_as_the_refit_needs() -> None:
    rows = np.zeros((4, FEATURES))
    log = [served(f"u{n}", T0 + 100 * n, rows) for n in range(10)]  # u0 served first
    events = [event(f"u{n}", "i1", T0 + 100 * n + 1) for n in range(10)]
    read: list[str] = []

    def newest_first():
        for record in reversed(log):
            read.append(record.user_id)
            yield record

    queries = labelled_queries(newest_first(), events, 86_400, split_at=T0 + 650, per_side=2)
    assert queries.times == [T0 + 500, T0 + 600, T0 + 800, T0 + 900]  # oldest first: 2 trained on, 2 held out
    assert read == ["u9", "u8", "u7", "u6", "u5", "u4"]  # u7: a third held-out query, passed over

    late = [event("u9", "i1", T0 + 901)]  # only queries served within the window before it can be labelled
    read.clear()
    assert labelled_queries(newest_first(), late, window_seconds=250).times == [T0 + 900]
    assert read == ["u9", "u8", "u7", "u6"]  # u6, served 301 s before the event, ends the reading


# ---- the refit -----------------------------------------------------------------------------------------------


def ranking_data(
    rng: np.random.Generator, queries: int, relevant_feature: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Queries of 10 rows; the relevant row is the one with the largest value of `relevant_feature`."""
    rows = rng.normal(size=(queries * 10, FEATURES))
    labels = np.zeros(queries * 10)
    for q in range(queries):
        block = rows[q * 10 : (q + 1) * 10, relevant_feature]
        labels[q * 10 + int(np.argmax(block))] = 1
    return rows, labels, [10] * queries


def booster_for(relevant_feature: int, **params: Any) -> Any:
    rows, labels, groups = ranking_data(np.random.default_rng(3), 300, relevant_feature)
    data = lightgbm.Dataset(rows, labels, group=groups)
    return lightgbm.train(
        {
            "objective": "lambdarank",
            "num_leaves": 7,
            "min_data_in_leaf": 5,
            "verbosity": -1,
            "num_threads": 1,
            **params,
        },
        data,
        num_boost_round=20,
    )


def ranker_of(booster: Any) -> RankerModel:
    """The refit reads the booster only; its MF is not needed."""
    return RankerModel(mf=None, booster=booster)  # type: ignore[arg-type]


def logged(rng: np.random.Generator, queries: int, relevant_feature: int, t0: float) -> tuple[list, list]:
    """Served records and the positive events that label them."""
    rows, labels, _ = ranking_data(rng, queries, relevant_feature)
    log, events = [], []
    for q in range(queries):
        items = [f"q{q}-i{n}" for n in range(10)]
        log.append(served(f"user{q}", t0 + q, rows[q * 10 : (q + 1) * 10], items))
        events.append(event(f"user{q}", items[int(np.argmax(labels[q * 10 : (q + 1) * 10]))], t0 + q + 1))
    return log, events


def test_refit_follows_a_shift_in_what_makes_an_item_relevant() -> None:
    """Trained when feature 0 was what mattered; the buffer shows a blend of 0 and 1 now matters."""
    booster = booster_for(relevant_feature=0)
    rng = np.random.default_rng(8)
    rows = rng.normal(size=(200 * 10, FEATURES))
    log, events = [], []
    for q in range(200):
        block = rows[q * 10 : (q + 1) * 10]
        items = [f"q{q}-i{n}" for n in range(10)]
        best = int(np.argmax(block[:, 0] + 2 * block[:, 1]))
        log.append(served(f"user{q}", T0 + q, block, items))
        events.append(event(f"user{q}", items[best], T0 + q + 1))
    queries = labelled_queries(reversed(log), events, 86_400)
    step = refit_ranker(ranker_of(booster), queries, heldout_from=T0 + 160, decay=0.5)
    assert step is not None and step.train_queries == MAX_REFIT_QUERIES and step.heldout_queries == 40  # the latest
    assert step.ndcg_after > step.ndcg_before and step.improved
    refit = RankerModel(None, trees=step.trees)  # type: ignore[arg-type]
    assert refit.booster is not booster and refit.booster.num_trees() == booster.num_trees()  # leaves, not trees
    rows = rng.normal(size=(50, FEATURES))
    assert np.array_equal(refit.leaf_index(rows), booster.predict(rows, pred_leaf=True))
    assert not np.allclose(refit.predict(rows), booster.predict(rows))
    from_text = RankerModel(None, trees=LeafTable.parse(step.trees.text))  # type: ignore[arg-type]
    assert np.array_equal(from_text.leaf_index(rows), booster.predict(rows, pred_leaf=True))


def test_a_refit_that_ranks_the_held_out_queries_worse_is_not_kept() -> None:
    booster = booster_for(relevant_feature=0)
    rng = np.random.default_rng(9)
    first_log, first_events = logged(rng, 100, relevant_feature=2, t0=T0)  # refit on feature 2
    later_log, later_events = logged(rng, 30, relevant_feature=0, t0=T0 + 1000)  # held out: feature 0 again
    queries = labelled_queries(reversed(first_log + later_log), first_events + later_events, 86_400)
    step = refit_ranker(ranker_of(booster), queries, heldout_from=T0 + 1000, decay=0.0)
    assert step is not None and step.ndcg_after < step.ndcg_before and not step.improved


def test_too_few_labelled_queries_means_no_refit() -> None:
    log, events = logged(np.random.default_rng(2), 10, relevant_feature=0, t0=T0)
    queries = labelled_queries(reversed(log), events, 86_400)
    assert refit_ranker(ranker_of(booster_for(0)), queries, T0 + 8, 0.9) is None


@pytest.mark.parametrize(
    "params",
    [
        {},
        # regularised leaves, and queries longer than LambdaRank's truncation level
        {"lambda_l1": 0.5, "lambda_l2": 2.0, "lambdarank_truncation_level": 4},
        {"max_delta_step": 0.3},
        {"sigmoid": 2.0, "lambdarank_norm": False, "label_gain": [0, 3, 7]},
    ],
)
def test_the_leaf_refit_gives_lightgbms_booster_refit(params: dict[str, Any]) -> None:
    booster = booster_for(relevant_feature=0, **params)
    rng = np.random.default_rng(21)
    rows, labels, groups = ranking_data(rng, 60, relevant_feature=1)  # what matters has moved to feature 1
    labels[rng.random(len(labels)) < 0.1] = 2 if "label_gain" in params else 1  # a few more relevant rows
    groups[:3] = [4, 6, 10]  # queries of other lengths too
    rows, labels = rows[: sum(groups)], labels[: sum(groups)]
    trees = ranker_of(booster).leaf_table()
    for decay in (0.9, 0.3):
        expected = booster.refit(rows, labels, decay_rate=decay, group=groups, num_threads=1, verbosity=-1)
        refitted = trees.refit(booster.predict(rows, pred_leaf=True), labels, groups, decay)
        assert np.abs(LeafTable.parse(expected.model_to_string()).values - trees.values).max() > 1e-3  # it moved
        # LightGBM looks the sigmoid up in a table and sums gradients in float32: agreement to ~1e-4.
        assert np.allclose(refitted.values, LeafTable.parse(expected.model_to_string()).values, rtol=0, atol=2e-4)
        # Its text is a model LightGBM loads, predicting what the refit leaves add up to.
        loaded = lightgbm.Booster(model_str=refitted.text)
        assert np.allclose(loaded.predict(rows), expected.predict(rows), atol=1e-3)
        assert np.allclose(loaded.predict(rows), refitted.scores(booster.predict(rows, pred_leaf=True)), atol=1e-9)


def test_a_leaf_table_reads_and_writes_lightgbms_model_text() -> None:
    booster = booster_for(relevant_feature=0)
    text = booster.model_to_string()
    table = LeafTable.parse(text)
    assert table.values.shape == (20, 7) and table.shrinkage.tolist() == [0.1] * 20
    assert dataclasses.replace(table).text == text  # written from its parts: the same text, tree sizes and all
    rows = np.random.default_rng(4).normal(size=(50, FEATURES))
    assert np.allclose(table.scores(booster.predict(rows, pred_leaf=True)), booster.predict(rows), atol=1e-12)
    with pytest.raises(ValueError, match="lambdarank"):
        LeafTable.parse(text.replace("objective=lambdarank", "objective=binary sigmoid:1"))
    with pytest.raises(ValueError, match="path_smooth"):
        LeafTable.parse(text.replace("[path_smooth: 0]", "[path_smooth: 1]"))


def test_ndcg_of_a_perfect_and_a_reversed_ranking() -> None:
    labels = np.array([1.0, 0, 0, 0])
    assert ndcg_at_k(np.array([4.0, 3, 2, 1]), labels, [4]) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([1.0, 2, 3, 4]), labels, [4]) == pytest.approx(1 / np.log2(5))
    # Several queries: a perfect one, one with nothing relevant, one whose relevant row ranks 12th of 12.
    scores = np.r_[4.0, 3, 2, 1, 0.5, 0.2, np.arange(12.0, 0, -1)]
    relevance = np.r_[labels, 0, 0, np.zeros(11), 1]
    assert ndcg_at_k(scores, relevance, [4, 2, 12]) == pytest.approx(1 / 3)


# ---- the recommend path logs what the ranker scored; the update learns from it -----------------------------


def two_tastes(users: int, t0: float) -> list[Interaction]:
    out = []
    for u in range(users):
        group = "a" if u % 2 else "b"
        for n in range(8):
            out.append(event(f"user{u}", f"{group}{(u + n) % 12}", t0 + u * 50 + n))
    return sorted(out, key=lambda e: e.timestamp)


@pytest.fixture
def ranked(redis_client: redis.Redis) -> tuple[Settings, FeatureStore, Any, list[Interaction]]:
    settings = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0", "FEATURE_LOG_CAP": "25"})
    history = two_tastes(60, T0)
    model, _ = train_ranker(
        history,
        settings,
        MFHyperparameters(factors=8, iterations=4),
        RankerHyperparameters(negatives_per_query=5, max_queries=200, rounds=10, min_data_in_leaf=5),
    )
    store = FeatureStore(redis_client, settings, historical=True)
    store.apply_many(history)
    return settings, store, model, history


def test_ranked_recommendations_log_their_features_capped(redis_client: redis.Redis, ranked) -> None:
    settings, store, model, _ = ranked
    served_model = TrainedModel("lgbm-test", ModelKind.LGBM, model, store, settings)
    recommender = Recommender(store, settings, lambda: served_model)
    for u in range(30):
        recommender.recommend(f"user{u}", 5, now=T0 + 10_000)
    assert redis_client.llen(Keys.SERVED_FEATURES) == 25  # FEATURE_LOG_CAP
    record = ServedFeatures.decode(redis_client.lrange(Keys.SERVED_FEATURES, -1, -1)[0])
    assert record.user_id == "user29" and record.model_version == "lgbm-test"
    assert record.rows.shape == (len(record.items), model.booster.num_feature())

    quiet = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0", "FEATURE_LOG_SAMPLE_RATE": "0"})
    redis_client.delete(Keys.SERVED_FEATURES)
    Recommender(store, quiet, lambda: served_model).recommend("user1", 5, now=T0 + 10_000)
    assert redis_client.llen(Keys.SERVED_FEATURES) == 0


def test_an_lgbm_update_refits_the_ranker_from_served_queries(ranked) -> None:
    settings, store, model, _ = ranked
    served_model = TrainedModel("lgbm-test", ModelKind.LGBM, model, store, settings)
    recommender = Recommender(store, settings, lambda: served_model)
    log, events = [], []
    t = T0 + 20_000
    for u in range(60):  # each user is served, then likes the top item shown
        result = recommender.recommend(f"user{u}", 5, now=t, log=False)
        log.append(result.served_features)
        events.append(event(f"user{u}", result.items[0].item_id, t + 1))
        t += 10
    params = online_hyperparameters(settings)
    updated = apply_update(ModelKind.LGBM, model, events, params, reversed(log))
    assert updated.refit is not None and updated.refit.train_queries >= 40
    assert updated.model.trees is (updated.refit.trees if updated.refit.improved else model.trees)
    assert model.booster.num_trees() == updated.model.booster.num_trees()


def test_the_learner_pages_through_the_log_newest_first_while_it_grows(redis_client: redis.Redis) -> None:
    settings = Settings.from_env({"FEATURE_LOG_CAP": "5000"})
    records = [served(f"u{n}", T0 + n, np.zeros((2, FEATURES))) for n in range(SERVED_LOG_PAGE + 100)]
    redis_client.rpush(Keys.SERVED_FEATURES, *(r.encode() for r in records))
    redis_client.rpush(Keys.SERVED_FEATURES, b"not a record")
    reading = OnlineLearner(redis_client, None, settings)._served_newest_first()
    first = [next(reading) for _ in range(SERVED_LOG_PAGE - 1)]  # the corrupt record is skipped
    # A recommend function appends meanwhile: the next page starts one record later in the list.
    redis_client.rpush(Keys.SERVED_FEATURES, served("late", T0 + 10_000, np.zeros((2, FEATURES))).encode())
    users = [r.user_id for r in [*first, *reading]]
    assert users == [f"u{n}" for n in reversed(range(SERVED_LOG_PAGE + 100))]  # each once, newest first


def test_the_learner_refits_an_lgbm_champion_from_the_log_in_redis(redis_client: redis.Redis, aws, ranked) -> None:
    settings, store, model, _ = ranked
    registry = ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)
    registry.register(model.to_bundle(ModelMetadata(version="lgbm-online-0", kind=ModelKind.LGBM)))
    registry.promote("lgbm-online-0", reason="test champion")
    served_model = TrainedModel("lgbm-online-0", ModelKind.LGBM, model, store, settings)
    logging = settings.model_copy(update={"feature_log_cap": 5000, "online_learning_buffer_size": 60})
    recommender = Recommender(store, logging, lambda: served_model)
    buffer = OnlineBuffer(redis_client, logging)
    t = T0 + 20_000
    for u in range(60):  # each user is served (the request logs its features), then likes the top item shown
        result = recommender.recommend(f"user{u}", 5, now=t)
        buffer.append_once(event(f"user{u}", result.items[0].item_id, t + 1))
        t += 10

    outcome = OnlineLearner(redis_client, registry, logging).update()

    assert outcome.events == 60 and outcome.ranker_queries >= 40
    assert outcome.ranker_ndcg_before is not None and outcome.ranker_ndcg_after is not None
    assert outcome.outcome is UpdateOutcome.PUBLISHED  # the MF step or the refit, or both, held up
    child = registry.get(outcome.to_version)
    assert child.kind is ModelKind.LGBM and child.parent_version == "lgbm-online-0"
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 0
