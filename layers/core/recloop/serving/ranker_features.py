"""The ranker's features for a user's candidates, read from the live feature store at request time (and, for
training, from an offline replay of the same store code), so a model's weights are frozen while its inputs stay
fresh. The features, in `recloop.models.ranker.FEATURE_NAMES` order:

- mf_score, mf_known: the MF affinity of the user (trained or folded in) for the item;
- cooc_score: the real-time co-occurrence score (the built-in scorer);
- pop_log, pop_share: the item's decayed popularity, absolute and relative to the most popular item;
- item_pos_rate, item_events_log, item_age_days, item_idle_days: the item's record;
- user_events_log, user_engagement: how active the user is;
- category_affinity: the share of the user's recent items sharing a category with the item;
- from_cooc, from_mf: which candidate sources proposed the item.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING

import numpy as np

from recloop.features.store import FeatureStore, ItemRecord
from recloop.models.mf import MatrixFactorisation
from recloop.models.ranker import FEATURE_NAMES
from recloop.serving.context import UserContext
from recloop.serving.item_cache import ItemCache

if TYPE_CHECKING:
    from recloop.serving.scorers import CooccurrenceScorer


# The ranker scores at most this many candidates: MF's best, then the best by co-occurrence and popularity.
MAX_RERANK = 200

MF_SHORTLIST = 50

FOLD_IN_ITEMS = 50

DAY = 86_400.0

# An ItemRecord's numeric fields (events, positives, first_ts, last_ts), taken in C for every candidate at once.
RECORD_COUNTERS = operator.itemgetter(0, 1, 2, 3)


def user_mf_vector(mf: MatrixFactorisation, ctx: UserContext) -> np.ndarray | None:
    """The user's trained vector, else one folded in from the user's history as the store holds it now."""
    history = list(ctx.profile.history.items())[-FOLD_IN_ITEMS:]
    return mf.user_vector(ctx.profile.user_id, [i for i, _ in history], [w for _, w in history])


class FeatureBuilder:
    """The ranker's feature rows for a user's candidates: item records from the feature store (one pipeline for
    those not read within `max_age` seconds of request time), then each feature computed for every candidate
    at once."""

    def __init__(
        self, store: FeatureStore, mf: MatrixFactorisation, cooccurrence: CooccurrenceScorer, max_age: float = 0.0
    ) -> None:
        self.store = store
        self.mf = mf
        self.cooccurrence = cooccurrence
        self.records: ItemCache[ItemRecord] = ItemCache(store.item_records, max_age)

    def prefetch(self, ctx: UserContext, items: Sequence[str]) -> None:
        """Reads, in one round trip, what `shortlist` and `rows` will use of these candidates and of the user's
        recent items and is not held: popularity (into `ctx.popularity`) and records (`ctx.extras`)."""
        now = ctx.now
        popularity_cache = self.cooccurrence.popularity
        wanted = [item for item in dict.fromkeys(items) if item not in ctx.popularity]
        popularity = popularity_cache.held(wanted, now)
        popularity_missing = [item for item in wanted if item not in popularity]
        wanted = list(dict.fromkeys([*items, *(r.item_id for r in ctx.profile.recent)]))
        records = self.records.held(wanted, now)
        records_missing = [item for item in wanted if item not in records]
        scores, read = self.store.popularity_and_records(popularity_missing, records_missing)
        popularity_cache.keep(zip(popularity_missing, scores, strict=True), now)
        self.records.keep(zip(records_missing, read, strict=True), now)
        ctx.popularity.update(popularity)
        ctx.popularity.update(zip(popularity_missing, scores, strict=True))
        records.update(zip(records_missing, read, strict=True))
        ctx.extras["item_records"] = records

    def shortlist(self, ctx: UserContext, items: Sequence[str]) -> list[str]:
        """The candidates worth the ranker's time: MF's best, then the best by the built-in score."""
        if len(items) <= MAX_RERANK:
            return list(items)
        scores = self.cooccurrence.score(ctx, items)
        cooc = dict(zip(items, scores, strict=True))
        ctx.extras["cooc_scores"] = cooc
        chosen = dict.fromkeys(i for i in ctx.extras.get("from_mf", [])[:MF_SHORTLIST] if i in cooc)
        # Best first; a stable sort keeps equal scores in candidate order.
        for n in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist():
            if len(chosen) >= MAX_RERANK:
                break
            chosen[items[n]] = None
        return list(chosen)

    def rows(self, ctx: UserContext, items: Sequence[str]) -> np.ndarray:
        """One row per candidate, in FEATURE_NAMES order (float32)."""
        count = len(items)
        known = ctx.extras.get("cooc_scores")
        if known is not None and all(item in known for item in items):
            cooc = [known[item] for item in items]
        else:
            cooc = self.cooccurrence.score(ctx, items)  # also fills ctx.popularity for every item
        recent = [r.item_id for r in ctx.profile.recent]
        records = self._records(ctx, [*items, *recent])
        counters = chain.from_iterable(map(RECORD_COUNTERS, records[:count]))
        events, positives, first_ts, last_ts = (
            np.fromiter(counters, dtype=np.float64, count=4 * count).reshape(count, 4).T
        )
        now = ctx.now
        popularity = np.fromiter(map(ctx.popularity.get, items, repeat(0.0)), dtype=np.float64, count=count)
        top_pop = ctx.max_popularity or max(ctx.popularity.values(), default=0.0) or 1.0
        decayed = popularity / self.store.clock.scale(now) if popularity.any() else popularity
        positions = self.mf.positions(items)
        vector = ctx.extras.get("mf_vector")
        profile = ctx.profile
        from_cooc = {n for neighbours in ctx.neighbours.values() for n, _ in neighbours}
        from_mf = set(ctx.extras.get("from_mf", ()))
        columns = {
            "mf_score": self.mf.scores_at(vector, positions) if vector is not None else 0.0,
            "mf_known": positions >= 0,
            "cooc_score": cooc,
            "pop_log": np.log1p(np.maximum(decayed, 0.0)),
            "pop_share": popularity / top_pop,
            "item_pos_rate": positives / (events + 1.0),
            "item_events_log": np.log1p(events),
            # An item with no event yet is as new and as recently active as can be.
            "item_age_days": np.maximum(now - np.where(np.isnan(first_ts), now, first_ts), 0.0) / DAY,
            "item_idle_days": np.maximum(now - np.where(np.isnan(last_ts), now, last_ts), 0.0) / DAY,
            "user_events_log": math.log1p(sum(profile.event_counts.values())),
            "user_engagement": profile.engagement,
            "category_affinity": category_affinity(
                [r.categories for r in records[:count]], [r.categories for r in records[count:]]
            ),
            "from_cooc": np.fromiter(map(from_cooc.__contains__, items), dtype=bool, count=count),
            "from_mf": np.fromiter(map(from_mf.__contains__, items), dtype=bool, count=count),
        }
        rows = np.empty((count, len(FEATURE_NAMES)), dtype=np.float32)
        for n, name in enumerate(FEATURE_NAMES):
            rows[:, n] = columns[name]
        return rows

    def _records(self, ctx: UserContext, items: Sequence[str]) -> list[ItemRecord]:
        """The items' records: as prefetched for the request, else from the cache or the store."""
        prefetched: dict[str, ItemRecord] = ctx.extras.get("item_records", {})
        missing = [item for item in items if item not in prefetched]
        if not missing:
            return [prefetched[item] for item in items]
        read = dict(zip(missing, self.records.get_many(missing, ctx.now), strict=True))
        return [prefetched[item] if item in prefetched else read[item] for item in items]


def category_affinity(candidates: Sequence[frozenset[str]], recent: Sequence[frozenset[str]]) -> np.ndarray:
    """For each candidate's categories, the share of the user's recent items (with repeats) sharing one."""
    affinity = np.zeros(len(candidates), dtype=np.float64)
    # Each category -> the recent positions holding it, as bits: a candidate's matches are the bits of the union.
    holders: dict[str, int] = {}
    for position, categories in enumerate(recent):
        for category in categories:
            holders[category] = holders.get(category, 0) | (1 << position)
    if not holders:
        return affinity
    for n, categories in enumerate(candidates):
        matches = 0
        for category in categories:
            matches |= holders.get(category, 0)
        affinity[n] = matches.bit_count()
    return affinity / len(recent)
