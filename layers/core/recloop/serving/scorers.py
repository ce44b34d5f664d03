"""Scorers: one score per candidate for the request's user.

- popularity: decayed global popularity;
- trending: popularity over a short half-life, for users with no history;
- co-occurrence: neighbours of the user's recent items weighted by recency and affinity, plus a popularity prior;
  disliked items pull their neighbours down;
- MF: the user's MF affinity (the `mf` kind); ranker: LightGBM over the ranker's features (the `lgbm` kind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from recloop.features.store import FeatureStore
from recloop.serving.context import COOCCURRENCE_MODEL, POPULARITY_MODEL, TRENDING_MODEL, UserContext
from recloop.serving.item_cache import ItemCache

if TYPE_CHECKING:  # numpy and the models stay off the import path of functions that serve no trained model
    from recloop.models.mf import MatrixFactorisation
    from recloop.models.ranker import RankerModel
    from recloop.serving.ranker_features import FeatureBuilder


RECENCY_DISCOUNT = 0.9


class PopularityScorer:
    """Decayed popularity (events per half-life, weighted)."""

    model_version = POPULARITY_MODEL

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        _fill_popularity(ctx, items, self.store.popularity_of)
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

    def __init__(self, store: FeatureStore, popularity_prior_weight: float, cache_seconds: float = 0.0) -> None:
        self.store = store
        self.prior = popularity_prior_weight
        # The popularity of candidates below the cached top of the ranking, reused as long as that top is.
        self.popularity = ItemCache(store.popularity_of, cache_seconds)

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        _fill_popularity(ctx, items, lambda missing: self.popularity.get_many(missing, ctx.now))
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


def _fill_popularity(ctx: UserContext, items: Sequence[str], read: Callable[[list[str]], list[float]]) -> None:
    missing = [item for item in items if item not in ctx.popularity]
    if missing:
        ctx.popularity.update(zip(missing, read(missing), strict=True))


NOT_SHORTLISTED = -1e9


class MFScorer:
    """Ranks by MF affinity alone (the `mf` kind)."""

    def __init__(self, mf: MatrixFactorisation, model_version: str) -> None:
        self.mf = mf
        self.model_version = model_version

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        vector = ctx.extras.get("mf_vector")
        if vector is None:
            return [0.0] * len(items)
        return self.mf.scores(vector, items).tolist()


class RankerScorer:
    def __init__(self, model: RankerModel, features: FeatureBuilder, model_version: str) -> None:
        self.model = model
        self.features = features
        self.model_version = model_version

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        if not items:
            return []
        self.features.prefetch(ctx, items)
        chosen = self.features.shortlist(ctx, items)
        rows = self.features.rows(ctx, chosen)
        scores = self.model.predict(rows)
        # Features as they were at serving time: the online refit's training data (recloop.feature_log).
        ctx.extras["served_features"] = (chosen, rows, scores)
        predicted = dict(zip(chosen, scores.tolist(), strict=True))
        return [predicted.get(item, NOT_SHORTLISTED) for item in items]
