"""Recommendations: candidate sources feed one scorer, behind a small interface.

A ``Scorer`` (`recloop.serving.scorers`) takes the request's ``UserContext`` and candidate items and returns one
score per candidate; ``CandidateSource``s (`recloop.serving.sources`) propose items. Trained models (registry
versions, `recloop.serving.champion`) plug in as further sources and a scorer; the built-in ones need no training:

- trending: popularity decayed over a short half-life, for users the store has never seen;
- popularity: decayed global popularity (a longer half-life), candidates for known users;
- co-occurrence: items co-engaged with the user's recent items, maintained on every event, so one
  event changes the very next request. Disliked items pull their neighbours down.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recloop.adapters.redis import Keys
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.serving.context import (
    POPULARITY_MODEL,
    TRENDING_MODEL,
    CandidateSource,
    Scorer,
    ServedModel,
    UserContext,
)
from recloop.serving.scorers import CooccurrenceScorer, TrendingScorer
from recloop.serving.sources import CooccurrenceSource, PopularityCache, PopularitySource


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Arm:
    """The experiment arm a request is served by: its variant's model replaces the champion for the request."""

    experiment_id: str
    variant: str
    model: ServedModel | None  # None: the variant's version is served by the built-in scorers (popularity)
    # Queues the arm's impression (pipeline, milliseconds to the ranked list) on the recommendation log's pipeline,
    # so that counting it costs no round trip of its own.
    count_impression: Callable[[Any, float], None] | None = None


@dataclass(frozen=True)
class Recommendation:
    recommendation_id: str
    user_id: str
    items: list[ScoredItem]
    model_version: str
    cold_start: bool
    degraded: bool = False
    served_features: Any = None  # recloop.serving.served_log.ServedFeatures when a ranker scored the candidates
    experiment_id: str | None = None
    variant: str | None = None


# Queues one request's scored candidates (pipeline, model version, the ranker's feature rows, its scores) on the
# recommendation log's pipeline: the drift window's sample of served traffic, at no round trip of its own.
ObserveScored = Callable[[Any, str, Any, Any], None]

# How many of a user's latest experiment impressions are kept for attribution by time window.
EXPERIMENT_IMPRESSIONS_KEPT = 32


@dataclass(frozen=True)
class ExperimentImpression:
    """One served list of an experiment, as the user's impression list keeps it for attribution."""

    recommendation_id: str
    experiment_id: str
    variant: str
    ts: float
    items: tuple[str, ...]

    def encode(self) -> str:
        return json.dumps(
            {"r": self.recommendation_id, "x": self.experiment_id, "v": self.variant, "t": self.ts, "i": self.items},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str) -> ExperimentImpression:
        data = json.loads(raw)
        return cls(data["r"], data["x"], data["v"], float(data["t"]), tuple(data["i"]))


class Recommender:
    def __init__(
        self,
        store: FeatureStore,
        settings: Settings,
        model: Callable[[], ServedModel | None] | None = None,
        observe_scored: ObserveScored | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.model = model or (lambda: None)  # the champion of the moment, or None for the built-in scorers
        self.observe_scored = observe_scored  # when a ranker scored the candidates of a logged request
        self.popularity_cache = PopularityCache(
            lambda limit, _: store.top_popular(limit), settings.popularity_cache_seconds
        )
        self.popularity_source = PopularitySource(self.popularity_cache)
        self.trending_cache = PopularityCache(store.trending.top, settings.popularity_cache_seconds)
        self.trending_source = PopularitySource(self.trending_cache, trending=True)
        self.trending_scorer = TrendingScorer()
        self.cooccurrence_source = CooccurrenceSource(store, settings.popularity_cache_seconds)
        self.cooccurrence_scorer = CooccurrenceScorer(
            store, settings.popularity_prior_weight, settings.popularity_cache_seconds
        )

    def recommend(
        self,
        user_id: str,
        count: int,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
        now: float | None = None,
        *,
        log: bool = True,
        arm: Arm | None = None,
    ) -> Recommendation:
        """Top `count` items; `log=False` skips the attribution log (offline replays); `arm`: an experiment's
        variant serves the request instead of the champion."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        ctx, eligible, scorer = self.candidates(user_id, count, exclude, categories, now, arm=arm)
        scores = scorer.score(ctx, eligible)
        ranked = sorted(zip(eligible, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))[:count]
        served = scored = None
        if "served_features" in ctx.extras:
            from recloop.serving.served_log import ServedFeatures

            shortlist, rows, shortlist_scores = ctx.extras["served_features"]
            served = ServedFeatures.select(
                user_id, now, scorer.model_version, items=shortlist, rows=rows, scores=shortlist_scores
            )
            scored = (rows, shortlist_scores)
        result = Recommendation(
            recommendation_id=new_recommendation_id(),
            user_id=user_id,
            items=[ScoredItem(item, round(score, 6), rank) for rank, (item, score) in enumerate(ranked, 1)],
            model_version=scorer.model_version,
            cold_start=ctx.profile.is_cold,
            served_features=served,
            experiment_id=arm.experiment_id if arm else None,
            variant=arm.variant if arm else None,
        )
        if log:
            impression = None
            if arm is not None and arm.count_impression is not None:
                impression = (arm.count_impression, (time.perf_counter() - started) * 1000)
            self._log(result, now, impression, scored)
        return result

    def candidates(
        self,
        user_id: str,
        count: int,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
        now: float | None = None,
        *,
        arm: Arm | None = None,
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
            served = arm.model if arm is not None else self.model()
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

    def _log(
        self,
        result: Recommendation,
        now: float,
        impression: tuple[Callable[[Any, float], None], float] | None,
        scored: tuple[Any, Any] | None = None,
    ) -> None:
        """Short-lived log for attribution of later events, plus impression counters (and the experiment arm's,
        `impression`: its queuing function and the latency to count), plus the ranker's scored candidates
        (`scored`: feature rows and scores) for `observe_scored`."""
        pipe = self.store.redis.pipeline(transaction=False)
        if impression is not None:
            count_impression, latency_ms = impression
            count_impression(pipe, latency_ms)
        if scored is not None and self.observe_scored is not None:
            self.observe_scored(pipe, result.model_version, *scored)
        key = Keys.recommendation_log(result.user_id, result.recommendation_id)
        pipe.hset(
            key,
            mapping={
                "items": "|".join(item.item_id for item in result.items),
                "model_version": result.model_version,
                "experiment_id": result.experiment_id or "",
                "variant": result.variant or "",
                "ts": repr(now),
            },
        )
        pipe.expire(key, self.settings.attribution_window_seconds)
        if result.experiment_id is not None and result.variant is not None:
            impressions = Keys.user_experiment_impressions(result.user_id)
            logged = ExperimentImpression(
                result.recommendation_id,
                result.experiment_id,
                result.variant,
                now,
                tuple(item.item_id for item in result.items),
            )
            pipe.lpush(impressions, logged.encode())
            pipe.ltrim(impressions, 0, EXPERIMENT_IMPRESSIONS_KEPT - 1)
            pipe.expire(impressions, self.settings.attribution_window_seconds)
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
            pipe.rpush(Keys.SERVED_FEATURES, served.encode())
            pipe.ltrim(Keys.SERVED_FEATURES, -self.settings.feature_log_cap, -1)
        pipe.execute()


def new_recommendation_id() -> str:
    return "rec_" + uuid.uuid4().hex  # RECOMMENDATION_ID_PATTERN
