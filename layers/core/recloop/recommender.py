"""Recommendations: candidate sources feed one scorer, behind a small interface.

A ``Scorer`` takes the request's ``UserContext`` and candidate items and returns one score per
candidate; ``CandidateSource``s propose items. Trained models (later versions of the registry) plug
in as further scorers and sources; the built-in ones need no training:

- trending: popularity decayed over a short half-life, for users the store has never seen;
- popularity: decayed global popularity (a longer half-life), candidates for known users;
- co-occurrence: items co-engaged with the user's recent items, maintained on every event, so one
  event changes the very next request. Disliked items pull their neighbours down.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from recloop.features import FeatureStore, UserProfile
from recloop.settings import Settings
from recloop.store import Keys

POPULARITY_MODEL = "popularity"
TRENDING_MODEL = "trending"
COOCCURRENCE_MODEL = "cooccurrence"

# Neighbours read per history item, and recency discount per position in the history.
NEIGHBOURS_PER_ITEM = 50
RECENCY_DISCOUNT = 0.9
# Popularity candidates read beyond what is needed, so exclusions rarely leave a list short.
CANDIDATE_MARGIN = 50
MAX_POPULARITY_CANDIDATES = 2000
CATEGORY_OVERFETCH = 10


@dataclass
class UserContext:
    """Everything a scorer may use about the request and the user."""

    profile: UserProfile
    now: float
    exclude: set[str]
    categories: frozenset[str] | None = None
    # Request-scoped data that sources fetch and scorers reuse (one Redis read, not two).
    neighbours: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    max_popularity: float = 0.0
    # Per-request values of trained models (e.g. the user's MF vector).
    extras: dict[str, Any] = field(default_factory=dict)


class CandidateSource(Protocol):
    def candidates(self, ctx: UserContext, limit: int) -> list[str]: ...


class Scorer(Protocol):
    model_version: str

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]: ...


class ServedModel(Protocol):
    """A trained model version as the recommender uses it (see recloop.serving)."""

    version: str

    def prepare(self, ctx: UserContext) -> bool:
        """Per-request state; False when the model cannot serve this user (then the built-in path does)."""
        ...

    def sources(self) -> list[CandidateSource]: ...

    def scorer(self) -> Scorer: ...


class PopularityCache:
    """Top of a ranking of items (decayed popularity or trending), shared by requests for a short time.

    It also serves, stale, when Redis is unreachable, so recommendations degrade instead of failing.
    """

    def __init__(self, fetch: Callable[[int, float], list[tuple[str, float]]], ttl_seconds: float) -> None:
        self.fetch = fetch  # (limit, now) -> [(item, score)], best first
        self.ttl_seconds = ttl_seconds
        self._items: list[tuple[str, float]] = []
        self._fetched_at = float("-inf")
        self.hits = 0
        self.misses = 0

    def take_counts(self) -> tuple[int, int]:
        """Hits and misses since the last call (flushed to the shared metrics)."""
        counts = (self.hits, self.misses)
        self.hits = self.misses = 0
        return counts

    def top(self, limit: int, now: float) -> list[tuple[str, float]]:
        fresh = time.monotonic() - self._fetched_at < self.ttl_seconds
        if fresh and len(self._items) >= limit:
            self.hits += 1
            return self._items[:limit]
        self.misses += 1
        self._items = self.fetch(max(limit, len(self._items)), now)
        self._fetched_at = time.monotonic()
        return self._items[:limit]

    def stale(self, limit: int) -> list[tuple[str, float]]:
        return self._items[:limit]


class PopularitySource:
    """The top of a ranking (`cache`), its scores kept for the scorer in `ctx.popularity` (or, for trending,
    `ctx.extras["trending"]`)."""

    def __init__(self, cache: PopularityCache, trending: bool = False) -> None:
        self.cache = cache
        self.trending = trending

    def candidates(self, ctx: UserContext, limit: int) -> list[str]:
        want = limit + len(ctx.exclude) + CANDIDATE_MARGIN
        if ctx.categories:
            want *= CATEGORY_OVERFETCH
        top = self.cache.top(min(want, MAX_POPULARITY_CANDIDATES), ctx.now)
        if self.trending:
            ctx.extras["trending"] = dict(top)
            return [item for item, _ in top]
        for item, score in top:
            ctx.popularity[item] = score
        if top:
            ctx.max_popularity = max(ctx.max_popularity, top[0][1])
        return [item for item, _ in top]


class CooccurrenceSource:
    """Neighbours of the user's recent items (positive and negative), read in one pipeline."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def candidates(self, ctx: UserContext, limit: int) -> list[str]:
        sources = list(dict.fromkeys(r.item_id for r in ctx.profile.recent))
        for item, neighbours in zip(sources, self.store.neighbours(sources, NEIGHBOURS_PER_ITEM), strict=True):
            ctx.neighbours[item] = neighbours
        return list(dict.fromkeys(n for neighbours in ctx.neighbours.values() for n, _ in neighbours))


class PopularityScorer:
    """Decayed popularity (events per half-life, weighted)."""

    model_version = POPULARITY_MODEL

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        _fill_popularity(self.store, ctx, items)
        return [self.store.clock.decayed(ctx.popularity.get(item, 0.0), ctx.now) for item in items]


class TrendingScorer:
    """Trending score (decayed over TRENDING_HALF_LIFE_HOURS), for users with no history; the candidates come
    from PopularitySource(trending=True)."""

    model_version = TRENDING_MODEL

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        trending = ctx.extras.get("trending", {})
        return [trending.get(item, 0.0) for item in items]


class CooccurrenceScorer:
    """Sum over recent items j of recency(j) * affinity(j) * P(candidate | j), plus a popularity prior."""

    model_version = COOCCURRENCE_MODEL

    def __init__(self, store: FeatureStore, popularity_prior_weight: float) -> None:
        self.store = store
        self.prior = popularity_prior_weight

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        _fill_popularity(self.store, ctx, items)
        totals = dict.fromkeys(items, 0.0)
        position = 0
        for source, neighbours in ctx.neighbours.items():
            affinity = max(-1.0, min(1.0, ctx.profile.history.get(source, 0.0)))
            mass = sum(score for _, score in neighbours)
            if mass <= 0 or affinity == 0:
                position += 1
                continue
            weight = affinity * RECENCY_DISCOUNT**position / mass
            position += 1
            for neighbour, score in neighbours:
                if neighbour in totals:
                    totals[neighbour] += weight * score
        top = ctx.max_popularity or 1.0
        return [totals[item] + self.prior * ctx.popularity.get(item, 0.0) / top for item in items]


def _fill_popularity(store: FeatureStore, ctx: UserContext, items: Sequence[str]) -> None:
    missing = [item for item in items if item not in ctx.popularity]
    for item, score in zip(missing, store.popularity_of(missing), strict=True):
        ctx.popularity[item] = score


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Recommendation:
    recommendation_id: str
    user_id: str
    items: list[ScoredItem]
    model_version: str
    cold_start: bool
    degraded: bool = False
    served_features: Any = None  # recloop.feature_log.ServedFeatures when a ranker scored the candidates


class Recommender:
    def __init__(
        self, store: FeatureStore, settings: Settings, model: Callable[[], ServedModel | None] | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.model = model or (lambda: None)  # the champion of the moment, or None for the built-in scorers
        self.popularity_cache = PopularityCache(
            lambda limit, _: store.top_popular(limit), settings.popularity_cache_seconds
        )
        self.popularity_source = PopularitySource(self.popularity_cache)
        self.trending_cache = PopularityCache(store.trending.top, settings.popularity_cache_seconds)
        self.trending_source = PopularitySource(self.trending_cache, trending=True)
        self.trending_scorer = TrendingScorer()
        self.cooccurrence_source = CooccurrenceSource(store)
        self.cooccurrence_scorer = CooccurrenceScorer(store, settings.popularity_prior_weight)

    def recommend(
        self,
        user_id: str,
        count: int,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
        now: float | None = None,
        *,
        log: bool = True,
    ) -> Recommendation:
        """Top `count` items; `log=False` skips the attribution log (offline replays)."""
        now = time.time() if now is None else now
        ctx, eligible, scorer = self.candidates(user_id, count, exclude, categories, now)
        scores = scorer.score(ctx, eligible)
        ranked = sorted(zip(eligible, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))[:count]
        served = None
        if "served_features" in ctx.extras:
            from recloop.feature_log import ServedFeatures

            shortlist, rows, shortlist_scores = ctx.extras["served_features"]
            served = ServedFeatures.select(
                user_id, now, scorer.model_version, items=shortlist, rows=rows, scores=shortlist_scores
            )
        result = Recommendation(
            recommendation_id=new_recommendation_id(),
            user_id=user_id,
            items=[ScoredItem(item, round(score, 6), rank) for rank, (item, score) in enumerate(ranked, 1)],
            model_version=scorer.model_version,
            cold_start=ctx.profile.is_cold,
            served_features=served,
        )
        if log:
            self._log(result, now)
        return result

    def candidates(
        self,
        user_id: str,
        count: int,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
        now: float | None = None,
    ) -> tuple[UserContext, list[str], Scorer]:
        """The request context, the eligible candidates and the scorer that will rank them."""
        now = time.time() if now is None else now
        profile = self.store.user_profile(user_id)
        ctx = UserContext(
            profile=profile,
            now=now,
            exclude=set(exclude) | set(profile.history),
            categories=frozenset(categories) if categories else None,
        )
        sources: list[CandidateSource] = [self.trending_source]
        scorer: Scorer = self.trending_scorer
        if not profile.is_cold:
            sources = [self.cooccurrence_source, self.popularity_source]
            scorer = self.cooccurrence_scorer
            served = self.model()
            if served is not None and served.prepare(ctx):
                sources += served.sources()
                scorer = served.scorer()
        candidates: dict[str, None] = {}
        for source in sources:
            candidates.update(dict.fromkeys(source.candidates(ctx, count)))
        return ctx, self._eligible(ctx, list(candidates)), scorer

    def degraded_recommendation(self, user_id: str, count: int, exclude: Sequence[str] = ()) -> Recommendation | None:
        """Last known trending (else popular) items, for when the feature store is unreachable; None if none."""
        excluded = set(exclude)
        for cache, model_version in ((self.trending_cache, TRENDING_MODEL), (self.popularity_cache, POPULARITY_MODEL)):
            items = [(i, s) for i, s in cache.stale(count + len(excluded)) if i not in excluded][:count]
            if items:
                return Recommendation(
                    recommendation_id=new_recommendation_id(),
                    user_id=user_id,
                    items=[ScoredItem(item, 0.0, rank) for rank, (item, _) in enumerate(items, 1)],
                    model_version=model_version,
                    cold_start=True,
                    degraded=True,
                )
        return None

    def _eligible(self, ctx: UserContext, candidates: list[str]) -> list[str]:
        eligible = [item for item in candidates if item not in ctx.exclude]
        if ctx.categories:
            categories = self.store.categories_of(eligible)
            eligible = [item for item in eligible if categories[item] & ctx.categories]
        return eligible

    def _log(self, result: Recommendation, now: float) -> None:
        """Short-lived log for attribution of later events, plus impression counters."""
        pipe = self.store.redis.pipeline(transaction=False)
        key = Keys.recommendation_log(result.user_id, result.recommendation_id)
        pipe.hset(
            key,
            mapping={
                "items": "|".join(item.item_id for item in result.items),
                "model_version": result.model_version,
                "variant": "",
                "ts": repr(now),
            },
        )
        pipe.expire(key, self.settings.attribution_window_seconds)
        for item in result.items:
            pipe.hincrby(Keys.item_features(item.item_id), "imp", 1)
        pipe.hincrby(Keys.COUNTERS, "recommend:total", 1)
        hits, misses = map(
            sum, zip(self.popularity_cache.take_counts(), self.trending_cache.take_counts(), strict=True)
        )
        pipe.hincrby(Keys.COUNTERS, "cache:hit", hits)
        pipe.hincrby(Keys.COUNTERS, "cache:miss", misses)
        if result.cold_start:
            pipe.hincrby(Keys.COUNTERS, "recommend:cold", 1)
        served = result.served_features
        if served is not None and random.random() < self.settings.feature_log_sample_rate:
            from recloop.feature_log import FEATURE_LOG_KEY

            pipe.rpush(FEATURE_LOG_KEY, served.encode())
            pipe.ltrim(FEATURE_LOG_KEY, -self.settings.feature_log_cap, -1)
        pipe.execute()


def new_recommendation_id() -> str:
    return "rec_" + uuid.uuid4().hex
