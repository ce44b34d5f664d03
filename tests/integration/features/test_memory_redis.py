"""The offline in-process store answers the feature store exactly as a real Redis server does."""

import random

import pytest
import redis

from recloop.core.settings import Settings
from recloop.features.memory_redis import MemoryRedis
from recloop.features.store import FeatureStore, ItemMetadata
from recloop.handlers.http.schemas import InteractionIn
from recloop.serving.recommender import Recommender

T0 = 1_700_000_000.0
KINDS = ["view", "click", "like", "purchase", "dislike"]


def events(count: int, seed: int = 3):
    rng = random.Random(seed)
    return [
        InteractionIn(
            user_id=f"u{rng.randint(0, 40)}",
            item_id=f"i{min(int(rng.expovariate(0.08)), 120)}",
            event_type=rng.choice(KINDS),
            timestamp=T0 + n * 600,
            event_id=f"e{n % (count - 5)}",  # a few repeated ids: duplicates must count once on both
        ).to_event(T0 + n * 600)
        for n in range(count)
    ]


def test_replay_gives_identical_features_and_recommendations(redis_client: redis.Redis) -> None:
    settings = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0", "COOCCURRENCE_CAP": "10", "RECENT_ITEMS_CAP": "8"})
    real = FeatureStore(redis_client, settings, historical=True)
    memory = FeatureStore(MemoryRedis(), settings, historical=True)
    stream = events(1500)
    catalogue = [ItemMetadata(f"i{n}", ("Drama",) if n % 2 else ("Comedy",), f"T{n}") for n in range(130)]
    for store in (real, memory):
        store.upsert_items(catalogue)
        for start in range(0, len(stream), 97):
            assert store.apply_many(stream[start : start + 97]) is not None
    assert real.apply_many(stream[:30]) == memory.apply_many(stream[:30])

    for user in [f"u{n}" for n in range(41)]:
        a, b = real.user_profile(user), memory.user_profile(user)
        assert a.history == pytest.approx(b.history) and a.recent == b.recent
        assert a.event_counts == b.event_counts and a.engagement == pytest.approx(b.engagement)
    items = [f"i{n}" for n in range(130)]
    assert [(i, pytest.approx(s)) for i, s in real.top_popular(50)] == memory.top_popular(50)
    assert real.popularity_of(items) == pytest.approx(memory.popularity_of(items))
    for a, b in zip(real.neighbours(items, 20), memory.neighbours(items, 20), strict=True):
        assert [x for x, _ in a] == [x for x, _ in b] and [s for _, s in a] == pytest.approx([s for _, s in b])
    for item in items:
        a, b = real.item_features(item), memory.item_features(item)
        assert a.keys() == b.keys()
        assert {k: float(v) for k, v in a.items() if k not in ("cat", "title")} == pytest.approx(
            {k: float(v) for k, v in b.items() if k not in ("cat", "title")}
        )
    now = stream[-1].timestamp
    for user in ("u1", "u7", "u33", "stranger"):
        x = Recommender(real, settings).recommend(user, 10, now=now)
        y = Recommender(memory, settings).recommend(user, 10, now=now)
        assert [i.item_id for i in x.items] == [i.item_id for i in y.items]
        assert [i.score for i in x.items] == pytest.approx([i.score for i in y.items])
