"""The replay benchmark's configurations: the built-in ones and the table naming every one.

A configuration is a ``recloop.learning.evaluation.ReplaySystem`` built with a ``ReplayContext`` (settings,
Redis client, feature store). Adding one, e.g. a static trained model: write ``class StaticMF`` in your own
module, then either add ``CONFIGS["static_mf"] = "bench.static_mf:StaticMF"`` here (imported only when
selected), or call ``bench.configs.register("static_mf", StaticMF)`` in that module and pass
``--plugin bench.static_mf`` to ``python -m bench.replay``.

The table lives apart from the CLI so that plugins and configuration modules import it, never the module that
``python -m`` runs as ``__main__`` (a second copy of which would hold a second table).
"""

from __future__ import annotations

import importlib
from typing import Any

from recloop.learning.evaluation import FeatureStoreSystem, RecommenderSystem, ReplayContext, SystemFactory
from recloop.serving.context import UserContext
from recloop.serving.scorers import PopularityScorer, TrendingScorer
from recloop.serving.sources import PopularityCache, PopularitySource


class PopularityOnly(FeatureStoreSystem):
    """Real-time decayed global popularity (POPULARITY_HALF_LIFE_HOURS) for every user, the user's history
    excluded: the Recommender's own popularity source and scorer."""

    trending = False

    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context)
        store, seconds = context.store, context.settings.popularity_cache_seconds
        if self.trending:
            self.source = PopularitySource(PopularityCache(store.trending.top, seconds), trending=True)
            self.scorer: Any = TrendingScorer()
        else:
            self.source = PopularitySource(PopularityCache(lambda limit, _: store.top_popular(limit), seconds))
            self.scorer = PopularityScorer(store)

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        profile = self.context.store.user_profile(user_id)
        ctx = UserContext(profile=profile, now=now, exclude=set(profile.history))
        eligible = [item for item in self.source.candidates(ctx, k) if item not in ctx.exclude]
        scores = self.scorer.score(ctx, eligible)
        ranked = sorted(zip(eligible, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))
        return [item for item, _ in ranked[:k]]


class TrendingOnly(PopularityOnly):
    """Trending (popularity over TRENDING_HALF_LIFE_HOURS) for every user: what the Recommender serves a cold
    user, ranked exactly as it does."""

    trending = True


class RealtimeRecommender(RecommenderSystem):
    """The default Recommender as the recommend Lambda runs it (attribution log included): co-occurrence for
    known users, popularity for cold users."""

    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context, log=True)


# name -> factory, or "module:attribute" imported when the configuration is selected.
CONFIGS: dict[str, SystemFactory | str] = {
    "popularity": PopularityOnly,
    "trending": TrendingOnly,
    "realtime": RealtimeRecommender,
    "implicit_als": "bench.peers:ImplicitALS",
    "implicit_als_retrain": "bench.peers:ImplicitALSRetrain",
    "static_mf": "bench.trained:StaticMF",
    "static_lgbm": "bench.trained:StaticLGBM",
    "online": "bench.online:OnlineLearning",
    "online_features_only": "bench.online:OnlineFeaturesOnly",
    "full_loop": "bench.full_loop:FullLoop",
}


def register(name: str, factory: SystemFactory | str) -> None:
    CONFIGS[name] = factory


def resolve(name: str) -> SystemFactory:
    if name not in CONFIGS:
        raise KeyError(f"unknown configuration {name!r}; known: {', '.join(sorted(CONFIGS))}")
    factory = CONFIGS[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory
