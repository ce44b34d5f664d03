"""A reference built from a real training run: the ranker's point-in-time training rows (one per query) scored by
the trained ranker, and the training events with their items' categories from the feature store."""

from __future__ import annotations

import numpy as np
import redis

from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.drift.features import MONITORED_FEATURES, Source
from recloop.drift.reference import ReferenceSample, reference_from_ranker_training
from recloop.features.store import FeatureStore, ItemMetadata
from recloop.learning.training import RankerHyperparameters, ranker_rows, train_ranker
from recloop.models.mf import MFHyperparameters, train_mf
from recloop.models.ranker import FEATURE_NAMES

T0 = 1_700_000_000.0
SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
MF = MFHyperparameters(factors=8, iterations=4)
RANKER = RankerHyperparameters(negatives_per_query=5, max_queries=200, rounds=10, min_data_in_leaf=5)


def history(users: int = 60) -> list[Interaction]:
    events = []
    for u in range(users):
        group = "a" if u % 2 else "b"
        for n in range(8):
            kind = "like" if n % 3 else "view"
            item = f"{group}{(u + n) % 12}"
            t = T0 + u * 50 + n
            events.append(
                Interaction(
                    event_id=f"{u}-{n}", user_id=f"user{u}", item_id=item, event_type=kind, timestamp=t, received_at=t
                )
            )
    return sorted(events, key=lambda e: e.timestamp)


def test_a_trained_rankers_reference_has_one_row_per_query_and_the_event_mix(redis_client: redis.Redis) -> None:
    events = history()
    label_start = int(len(events) * (1 - RANKER.label_fraction))
    rows, _, groups = ranker_rows(events, train_mf(events[:label_start], MF), SETTINGS, RANKER, label_start)
    model, _ = train_ranker(events, SETTINGS, MF, RANKER)
    store = FeatureStore(redis_client, SETTINGS, historical=True)
    store.upsert_items([ItemMetadata(f"a{n}", ("drama",)) for n in range(12)], now=T0)

    reference = reference_from_ranker_training(
        "lgbm-1",
        rows=rows,
        scores=model.predict(rows),
        groups=groups,
        events=events,
        categories_of=store.categories_of,
    )

    assert rows.shape[1] == len(FEATURE_NAMES)
    assert reference.rows == {Source.SERVED: len(groups), Source.EVENTS: len(events)}
    scores = reference.sample.numeric["prediction_score"]
    assert len(scores) == len(groups) and np.isfinite(scores).all() and scores.std() > 0
    assert reference.sample.categorical["event_type"] == {"like": 300, "view": 180}
    assert reference.sample.categorical["item_category"] == {"drama": 240, "none": 240}
    assert set(reference.sample.categorical["mf_known"]) <= {"0", "1"}
    assert set(reference.sample.numeric) | set(reference.sample.categorical) == {f.name for f in MONITORED_FEATURES}
    assert ReferenceSample.from_npz(reference.to_npz()).sample.categorical == reference.sample.categorical
