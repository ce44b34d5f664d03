"""The feature store and recommender over a real Redis server."""

import pytest
import redis

from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.features.store import EVENT_MINUTES_TTL_SECONDS, FeatureStore, ItemMetadata
from recloop.handlers.http.schemas import InteractionIn
from recloop.serving.context import COOCCURRENCE_MODEL, TRENDING_MODEL
from recloop.serving.recommender import Recommender

T0 = 1_700_000_000.0


def event(user: str, item: str, kind: str = "click", t: float = T0, event_id: str | None = None) -> Interaction:
    return InteractionIn(user_id=user, item_id=item, event_type=kind, timestamp=t, event_id=event_id).to_event(t)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> FeatureStore:
    return FeatureStore(redis_client, settings, historical=True)  # the tests' clock is T0, not now


@pytest.fixture
def recommender(store: FeatureStore, settings: Settings) -> Recommender:
    return Recommender(store, settings)


def test_one_event_updates_user_item_and_global_features(store: FeatureStore, redis_client: redis.Redis) -> None:
    assert store.apply(event("u1", "i1", "purchase"))
    profile = store.user_profile("u1")
    assert profile.history == {"i1": 1.0}
    assert profile.event_counts == {"purchase": 1}
    assert profile.engagement == pytest.approx(1.0)
    assert [r.item_id for r in profile.recent] == ["i1"]
    item = store.item_features("i1")
    assert item["cnt:purchase"] == "1" and item["pos"] == "1"
    assert redis_client.zscore(Keys.POPULARITY, "i1") > 0
    assert redis_client.hget(Keys.COUNTERS, "events:purchase") == "1"


def test_keys_share_a_cluster_slot_per_user_and_per_item(store: FeatureStore, redis_client: redis.Redis) -> None:
    store.apply(event("u1", "i1"))
    store.apply(event("u1", "i2", t=T0 + 1))
    keys = set(redis_client.scan_iter(count=1000))  # KEYS reads one node of a cluster
    user_keys = {k for k in keys if k.startswith("{u:u1}")}
    assert {Keys.user_features("u1"), Keys.user_items("u1"), Keys.user_recent("u1")} <= user_keys
    assert Keys.item_cooccurrence("i1") in keys and Keys.item_cooccurrence("i2") in keys


def test_applied_events_are_counted_per_minute_of_wall_clock_and_type_once_each(
    store: FeatureStore, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("recloop.features.store.time.time", lambda: 1_795_780_845.0)  # whatever the events' time
    batch = [event("u1", "i1", event_id="e-1"), event("u2", "i1", "like"), event("u3", "i2", event_id="e-3")]
    store.apply_many(batch)
    store.apply_many(batch[:1])  # a retry: a duplicate, not counted again

    key = Keys.metrics_events(1_795_780_845 // 60)
    assert redis_client.hgetall(key) == {"click": "2", "like": "1"}
    assert 0 < redis_client.ttl(key) <= EVENT_MINUTES_TTL_SECONDS


def test_same_event_id_counts_once(store: FeatureStore) -> None:
    assert store.apply(event("u1", "i1", event_id="e-1")) is True
    assert store.apply(event("u1", "i1", event_id="e-1")) is False
    assert store.user_profile("u1").event_counts == {"click": 1}


def test_recent_items_are_capped(redis_client: redis.Redis) -> None:
    store = FeatureStore(redis_client, Settings.from_env({"RECENT_ITEMS_CAP": "5"}), historical=True)
    store.apply_many([event("u1", f"i{n}", t=T0 + n) for n in range(12)])
    assert redis_client.llen(Keys.user_recent("u1")) == 5
    assert store.user_profile("u1").recent[0].item_id == "i11"


def test_events_in_one_batch_see_each_other(store: FeatureStore, redis_client: redis.Redis) -> None:
    store.apply_many([event("u1", "a"), event("u1", "b", t=T0 + 1), event("u1", "c", t=T0 + 2)])
    assert set(redis_client.zrange(Keys.item_cooccurrence("c"), 0, -1)) == {"a", "b"}


def test_decay_favours_recent_popularity(store: FeatureStore, recommender: Recommender) -> None:
    week, two_days = 7 * 86_400, 2 * 86_400  # the default half-lives of popularity and trending
    store.apply_many([event(f"old{n}", "old_hit", t=T0) for n in range(3)])
    store.apply_many([event(f"new{n}", "new_hit", t=T0 + 3 * two_days) for n in range(2)])
    result = recommender.recommend("nobody", 2, now=T0 + 3 * two_days)
    assert [i.item_id for i in result.items] == ["new_hit", "old_hit"]
    # 2 clicks now vs 3 clicks three half-lives ago: 1.2 against 1.8 / 8.
    assert result.items[0].score == pytest.approx(1.2)
    assert result.items[1].score == pytest.approx(1.8 / 8)
    stored = dict(store.top_popular(2))
    assert store.clock.decayed(stored["old_hit"], T0 + 3 * week) == pytest.approx(1.8 / 8)


def seed_two_clusters(store: FeatureStore) -> None:
    """Users who like 'a' also like 'b' and 'c'; others like x/y/z, which are more popular overall."""
    for n in range(3):
        store.apply_many([event(f"ab{n}", "a"), event(f"ab{n}", "b", t=T0 + 1), event(f"ab{n}", "c", t=T0 + 2)])
    for n in range(6):
        store.apply_many([event(f"xy{n}", "x"), event(f"xy{n}", "y", t=T0 + 1), event(f"xy{n}", "z", t=T0 + 2)])


def test_a_cold_user_gets_what_is_trending_rather_than_what_was_popular(
    store: FeatureStore, recommender: Recommender
) -> None:
    day = 86_400.0
    store.apply_many([event(f"fan{n}", "last-month", "purchase", t=T0 - 10 * day) for n in range(30)])
    store.apply_many([event(f"fan{n}", "this-week", "purchase", t=T0) for n in range(3)])
    # Over 7 days' half-life the older hit still leads (30 x 2^-10/7 > 3); over 48 hours it does not.
    assert [item for item, _ in store.top_popular(2)] == ["last-month", "this-week"]
    result = recommender.recommend("stranger", 2, now=T0 + 60)
    assert [i.item_id for i in result.items] == ["this-week", "last-month"]
    assert result.cold_start and result.model_version == TRENDING_MODEL


def test_trending_carries_over_generations_and_never_overflows(redis_client: redis.Redis) -> None:
    """With a 1-hour half-life a generation lasts 256 hours; stored scores stay below 2^512 forever."""
    store = FeatureStore(redis_client, Settings.from_env({"TRENDING_HALF_LIFE_HOURS": "1"}), historical=True)
    hour = 3600.0
    boundary = (store.trending.generation(T0) + 1) * 256 * hour
    store.apply_many([event(f"u{n}", "a", "purchase", t=boundary - 2 * hour) for n in range(4)])
    store.apply_many([event(f"u{n}", "b", "purchase", t=boundary - hour) for n in range(3)])
    assert store.trending.generation(boundary - 1) + 1 == store.trending.generation(boundary + 1)
    # 4 x 2^-2 = 1 < 3 x 2^-1 = 1.5, read on either side of the boundary.
    for now in (boundary - 1, boundary + 1):
        assert store.trending.top(2, now) == [("b", pytest.approx(1.5, rel=1e-3)), ("a", pytest.approx(1.0, rel=1e-3))]
    # On a fixed epoch, eight years (70,080 half-lives) would need a factor of 2^70080; generations never do.
    # Each generation's key expires a generation after its last reads.
    generation_seconds = 256 * hour
    ttl = redis_client.ttl(f"recloop:trend:{store.trending.generation(boundary)}")
    assert 2 * generation_seconds < ttl <= 3 * generation_seconds
    later = boundary + 8 * 365 * 86_400.0
    store.trending.add(redis_client, "years-later", 1.0, later)
    assert store.trending.top(1, later) == [("years-later", pytest.approx(1.0))]
    assert all(
        score < 2.0**512
        for key in redis_client.keys("recloop:trend:*")
        for _, score in redis_client.zrange(key, 0, -1, withscores=True)
    )


def test_cold_user_gets_popular_items(store: FeatureStore, recommender: Recommender) -> None:
    seed_two_clusters(store)
    result = recommender.recommend("stranger", 3, now=T0 + 10)
    assert result.cold_start is True
    assert result.model_version == TRENDING_MODEL
    assert {i.item_id for i in result.items} == {"x", "y", "z"}


def test_one_event_changes_the_next_recommendation(store: FeatureStore, recommender: Recommender) -> None:
    seed_two_clusters(store)
    before = recommender.recommend("u", 3, now=T0 + 10)
    assert {i.item_id for i in before.items} == {"x", "y", "z"}

    store.apply(event("u", "a", t=T0 + 20))
    after = recommender.recommend("u", 3, now=T0 + 21)
    ranked = [i.item_id for i in after.items]
    assert after.cold_start is False and after.model_version == COOCCURRENCE_MODEL
    assert "a" not in ranked  # seen items are excluded
    assert ranked[:2] == ["b", "c"] or ranked[:2] == ["c", "b"]  # co-occurring items outrank the popular ones
    assert [i.rank for i in after.items] == [1, 2, 3]


def test_a_dislike_pushes_the_item_and_its_neighbours_down(store: FeatureStore, recommender: Recommender) -> None:
    seed_two_clusters(store)
    assert recommender.recommend("cold", 1, now=T0 + 10).items[0].item_id in {"x", "y", "z"}
    # Everyone who reacts now dislikes x: it falls in the popularity ranking for everybody.
    store.apply_many([event(f"hater{n}", "x", "dislike", t=T0 + 30) for n in range(10)])
    ranked = [i.item_id for i in recommender.recommend("cold", 6, now=T0 + 31).items]
    assert ranked[-1] == "x"

    # A user who liked 'a' and disliked 'y' gets y's neighbours (x, z) below a's (b, c).
    store.apply(event("v", "a", "like", t=T0 + 40))
    store.apply(event("v", "y", "dislike", t=T0 + 41))
    scores = {i.item_id: i.score for i in recommender.recommend("v", 4, now=T0 + 42).items}
    assert "y" not in scores and "a" not in scores
    assert min(scores["b"], scores["c"]) > max(scores["x"], scores["z"])
    # Without the dislike, z would have scored above its popularity prior alone.
    assert scores["z"] < Settings().popularity_prior_weight


def test_request_exclusions_and_category_filter(store: FeatureStore, recommender: Recommender) -> None:
    seed_two_clusters(store)
    store.upsert_items(
        [ItemMetadata("x", ("Drama",)), ItemMetadata("b", ("Drama", "War")), ItemMetadata("y", ("Comedy",))],
        now=T0,
    )
    ranked = [i.item_id for i in recommender.recommend("cold", 5, exclude=["x"], now=T0 + 5).items]
    assert "x" not in ranked
    drama = [i.item_id for i in recommender.recommend("cold", 5, categories=["Drama"], now=T0 + 5).items]
    assert drama == ["x", "b"]


def test_a_new_catalogue_item_can_be_recommended(store: FeatureStore, recommender: Recommender) -> None:
    store.apply(event("u1", "old"))
    store.upsert_items([ItemMetadata("brand_new", ("Documentary",), "A new film")], now=T0)
    assert store.item_features("brand_new")["title"] == "A new film"
    ranked = [i.item_id for i in recommender.recommend("cold", 5, now=T0).items]
    assert ranked == ["old", "brand_new"]


def test_recommendation_is_logged_for_attribution(store: FeatureStore, recommender: Recommender, redis_client) -> None:
    seed_two_clusters(store)
    result = recommender.recommend("ab0", 2, now=T0 + 5)
    log = redis_client.hgetall(Keys.recommendation_log("ab0", result.recommendation_id))
    assert log["items"].split("|") == [i.item_id for i in result.items]
    assert log["model_version"] == result.model_version
    assert 0 < redis_client.ttl(Keys.recommendation_log("ab0", result.recommendation_id)) <= 86_400
    assert redis_client.hget(Keys.item_features(result.items[0].item_id), "imp") == "1"


def test_degraded_answer_uses_the_last_known_popular_items(store: FeatureStore, recommender: Recommender) -> None:
    assert recommender.degraded_recommendation("u", 3) is None
    seed_two_clusters(store)
    recommender.recommend("cold", 3, now=T0 + 5)
    fallback = recommender.degraded_recommendation("u", 2, exclude=["x"])
    assert fallback is not None and fallback.degraded and fallback.model_version == TRENDING_MODEL
    assert len(fallback.items) == 2 and "x" not in [i.item_id for i in fallback.items]
