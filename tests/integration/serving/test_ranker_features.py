"""The ranker's served features and scores, computed column by column from prefetched and cached reads, are the
features the per-candidate definition gives and the scores LightGBM predicts for them: what a model learned
means the same when it serves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis

from recloop.adapters.redis import Keys
from recloop.core.events import CONVERSION_EVENTS, Interaction
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore, ItemMetadata
from recloop.learning.training import RankerHyperparameters, train_ranker
from recloop.models.bundle import ModelKind
from recloop.models.mf import MFHyperparameters
from recloop.models.ranker import FEATURE_NAMES
from recloop.serving.champion import TrainedModel
from recloop.serving.context import UserContext
from recloop.serving.ranker_features import DAY, category_affinity
from recloop.serving.recommender import Recommender
from recloop.serving.scorers import CooccurrenceScorer

T0 = 1_700_000_000.0
MF = MFHyperparameters(factors=8, iterations=4)
RANKER = RankerHyperparameters(negatives_per_query=8, max_queries=400, rounds=40, min_data_in_leaf=5)
KINDS = ["view", "view", "view", "click", "click", "like", "purchase", "dislike"]
# Caches on, as a recommend instance runs: the second request for a user reads through them.
SERVING = Settings.from_env({"POPULARITY_CACHE_SECONDS": "5", "ITEM_FEATURE_CACHE_SECONDS": "5"})
TRAINING = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})


def traffic(seed: int = 5) -> list[Interaction]:
    """Long-tailed traffic over 60 items; items b* appear only late (unknown to the model)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 61) ** 1.1
    items = rng.choice(60, size=2400, p=weights / weights.sum())
    events = []
    for n, item in enumerate(items.tolist()):
        t = T0 + n * 600
        name = f"a{item}" if n < 1900 or item % 4 else f"b{item}"
        kind = KINDS[int(rng.integers(len(KINDS)))]
        events.append(
            Interaction(
                event_id=f"e{n}",
                user_id=f"u{int(rng.integers(80))}",
                item_id=name,
                event_type=kind,
                timestamp=t,
                received_at=t,
            )
        )
    # z0: liked after a0 by a few users (so a neighbour of a0), then disliked by many: a negative popularity.
    late = T0 + 2400 * 600
    for n in range(40):
        user, t = f"u{n}", late + n * 60
        if n < 8:
            events.append(
                Interaction(event_id=f"y{n}", user_id=user, item_id="a0", event_type="view", timestamp=t, received_at=t)
            )
        kind = "like" if n < 8 else "dislike"
        events.append(
            Interaction(
                event_id=f"z{n}", user_id=user, item_id="z0", event_type=kind, timestamp=t + 1, received_at=t + 1
            )
        )
    return events


def per_candidate_rows(redis_client: redis.Redis, store: FeatureStore, mf, ctx: UserContext, items) -> np.ndarray:
    """The ranker's features by their definition, one candidate at a time, each item's hash and popularity read
    afresh from Redis."""
    cooc = CooccurrenceScorer(store, SERVING.popularity_prior_weight).score(ctx, items)
    recent = [r.item_id for r in ctx.profile.recent]
    raw = {item: redis_client.hgetall(Keys.item_features(item)) for item in [*items, *recent]}
    categories = {item: frozenset(h["cat"].split("|")) if h.get("cat") else frozenset() for item, h in raw.items()}
    recent_sets = [categories[item] for item in recent if categories[item]]
    popularity = {item: redis_client.zscore(Keys.POPULARITY, item) or 0.0 for item in items}
    top_pop = ctx.max_popularity or max(ctx.popularity.values(), default=0.0) or 1.0
    vector = ctx.extras.get("mf_vector")
    mf_scores = mf.scores(vector, items) if vector is not None else np.zeros(len(items), np.float32)
    from_cooc = {n for neighbours in ctx.neighbours.values() for n, _ in neighbours}
    from_mf = set(ctx.extras.get("from_mf", ()))
    now = ctx.now
    rows = np.zeros((len(items), len(FEATURE_NAMES)), dtype=np.float32)
    for n, item in enumerate(items):
        record = raw[item]
        events = sum(int(v) for k, v in record.items() if k.startswith("cnt:"))
        first = float(record["first_ts"]) if record.get("first_ts") else now
        last = float(record["last_ts"]) if record.get("last_ts") else now
        decayed = store.clock.decayed(popularity[item], now)
        mine = categories[item]
        rows[n] = (
            mf_scores[n],
            float(item in mf.item_index),
            cooc[n],
            math.log1p(max(decayed, 0.0)),
            popularity[item] / top_pop,
            int(record.get("pos", 0)) / (events + 1.0),
            math.log1p(events),
            max(now - first, 0.0) / DAY,
            max(now - last, 0.0) / DAY,
            math.log1p(sum(ctx.profile.event_counts.values())),
            ctx.profile.engagement,
            sum(1 for c in recent_sets if c & mine) / len(recent) if recent and mine else 0.0,
            float(item in from_cooc),
            float(item in from_mf),
        )
    return rows


@pytest.fixture(scope="module")
def ranker():
    events = traffic()
    model, _ = train_ranker(events[:1900], TRAINING, MF, RANKER)
    return model, events


def test_served_features_and_scores_match_the_per_candidate_definition_and_lightgbm(
    redis_client: redis.Redis, ranker
) -> None:
    model, events = ranker
    store = FeatureStore(redis_client, SERVING, historical=True)
    store.apply_many(events)
    # Categories on some items (a few shared), and catalogue items nobody has touched: no counters, no times.
    store.upsert_items(
        [ItemMetadata(f"a{n}", ("drama", "comedy") if n % 3 else ("drama",)) for n in range(0, 60, 2)]
        + [ItemMetadata(f"new{n}", ("comedy",)) for n in range(8)],
        now=T0,
    )
    served = TrainedModel("lgbm-test", ModelKind.LGBM, model, store, SERVING)
    recommender = Recommender(store, SERVING, lambda: served)
    now = events[-1].timestamp + 3600
    covered = np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    for user in ["u1", "u7", "u33", "u64", "u79"]:
        for _ in range(2):  # the second request reads through the caches
            ctx, eligible, scorer = recommender.candidates(user, 10, now=now)
            scores = scorer.score(ctx, eligible)
            shortlist, rows, served_scores = ctx.extras["served_features"]
            expected = per_candidate_rows(redis_client, store, model.mf, ctx, shortlist)
            np.testing.assert_allclose(rows, expected, rtol=1e-6, atol=1e-6)
            lightgbm = model.booster.predict(expected, num_threads=1)
            np.testing.assert_allclose(served_scores, lightgbm, rtol=0, atol=1e-5)
            by_item = dict(zip(eligible, scores, strict=True))
            assert [by_item[item] for item in shortlist] == pytest.approx(list(served_scores), abs=1e-12)
            covered = np.vstack([covered, rows])
    column = {name: covered[:, n] for n, name in enumerate(FEATURE_NAMES)}
    # The cases that have no value of their own were served: items the model does not know, items with no
    # event yet, items with negative popularity, shared and unshared categories.
    assert (column["mf_known"] == 0).any() and (column["mf_known"] == 1).any()
    assert (column["item_events_log"] == 0).any() and (column["item_age_days"] == 0).any()
    assert (column["category_affinity"] > 0).any() and (column["category_affinity"] == 0).any()
    assert redis_client.zscore(Keys.POPULARITY, "z0") < 0 and (column["pop_share"] < 0).any()
    assert any(e.event_type in CONVERSION_EVENTS for e in events) and (column["item_pos_rate"] > 0).any()


def test_category_affinity_counts_the_recent_items_sharing_a_category() -> None:
    recent = [frozenset({"a", "b"}), frozenset(), frozenset({"b"}), frozenset({"c"}), frozenset({"a"})]
    candidates = [frozenset({"a"}), frozenset({"b", "c"}), frozenset({"d"}), frozenset(), frozenset({"a", "b"})]
    expected = [sum(1 for r in recent if r & c) / len(recent) for c in candidates]
    assert category_affinity(candidates, recent).tolist() == expected
    assert category_affinity(candidates, []).tolist() == [0.0] * len(candidates)
