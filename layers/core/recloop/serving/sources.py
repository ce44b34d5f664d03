"""Candidate sources: what may be recommended to a user.

- popularity and trending: the top of a decayed ranking, cached for a moment (and served stale when Redis fails);
- co-occurrence: neighbours of the user's recent items, maintained on every event;
- MF: the items closest to the user's MF vector (trained models).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from recloop.features.store import FeatureStore
from recloop.serving.context import UserContext
from recloop.serving.item_cache import ItemCache

if TYPE_CHECKING:  # numpy stays off the import path of functions that serve no trained model
    from recloop.models.mf import MatrixFactorisation


# Neighbours read per history item, and recency discount per position in the history.
NEIGHBOURS_PER_ITEM = 50

# Popularity candidates read beyond what is needed, so exclusions rarely leave a list short.
CANDIDATE_MARGIN = 50

MAX_POPULARITY_CANDIDATES = 2000

CATEGORY_OVERFETCH = 10
# Candidates MF proposes (the ranker's shortlist keeps the best of them).
MF_CANDIDATES = 100


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
    """Neighbours of the user's recent items (positive and negative), read in one pipeline.

    An item's neighbour list is reused for `cache_seconds` of request time: the lists of popular items recur in
    most requests, and a second's staleness of one list only misses the links made in that second (the user's
    own events link items of the user's history, which are never recommended to the user anyway)."""

    def __init__(self, store: FeatureStore, cache_seconds: float = 0.0) -> None:
        self.store = store
        self.neighbours = ItemCache(lambda items: store.neighbours(items, NEIGHBOURS_PER_ITEM), cache_seconds)

    def candidates(self, ctx: UserContext, limit: int) -> list[str]:
        sources = list(dict.fromkeys(r.item_id for r in ctx.profile.recent))
        for item, neighbours in zip(sources, self.neighbours.get_many(sources, ctx.now), strict=True):
            ctx.neighbours[item] = neighbours
        return list(dict.fromkeys(n for neighbours in ctx.neighbours.values() for n, _ in neighbours))


class MFSource:
    def __init__(self, mf: MatrixFactorisation) -> None:
        self.mf = mf

    def candidates(self, ctx: UserContext, limit: int) -> list[str]:
        vector = ctx.extras.get("mf_vector")
        if vector is None:
            return []
        items = [item for item, _ in self.mf.top_items(vector, MF_CANDIDATES, ctx.exclude)]
        ctx.extras["from_mf"] = items  # best first
        return items
