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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recloop.features.store import FeatureStore
from recloop.models.mf import MatrixFactorisation
from recloop.models.ranker import FEATURE_NAMES
from recloop.serving.context import UserContext

if TYPE_CHECKING:
    from recloop.serving.scorers import CooccurrenceScorer


# The ranker scores at most this many candidates: MF's best, then the best by co-occurrence and popularity.
MAX_RERANK = 200

MF_SHORTLIST = 50

FOLD_IN_ITEMS = 50

DAY = 86_400.0


def user_mf_vector(mf: MatrixFactorisation, ctx: UserContext) -> np.ndarray | None:
    """The user's trained vector, else one folded in from the user's history as the store holds it now."""
    history = list(ctx.profile.history.items())[-FOLD_IN_ITEMS:]
    return mf.user_vector(ctx.profile.user_id, [i for i, _ in history], [w for _, w in history])


@dataclass(frozen=True)
class ItemRecord:
    events: int
    positives: int
    first_ts: float | None
    last_ts: float | None
    categories: frozenset[str]

    @classmethod
    def parse(cls, raw: dict[str, str]) -> ItemRecord:
        first, last = raw.get("first_ts"), raw.get("last_ts")
        return cls(
            events=sum(int(v) for k, v in raw.items() if k.startswith("cnt:")),
            positives=int(raw.get("pos", 0)),
            first_ts=float(first) if first else None,
            last_ts=float(last) if last else None,
            categories=frozenset(raw["cat"].split("|")) if raw.get("cat") else frozenset(),
        )


class ItemRecords:
    """Item records read from the store, reused for at most `max_age` seconds of request time.

    Candidates repeat across requests (popular items above all), and an item's counters move slowly, so a
    short reuse spares most of the per-request reads. Offline replays use max_age 0: exact point in time.
    """

    MAX_ENTRIES = 200_000

    def __init__(self, store: FeatureStore, max_age: float) -> None:
        self.store = store
        self.max_age = max_age
        self._cache: dict[str, tuple[float, ItemRecord]] = {}

    def get_many(self, items: Sequence[str], now: float) -> list[ItemRecord]:
        fresh = {}
        if self.max_age > 0:
            fresh = {i: e[1] for i in items if (e := self._cache.get(i)) is not None and now - e[0] <= self.max_age}
        missing = [item for item in dict.fromkeys(items) if item not in fresh]
        if missing:
            for item, raw in zip(missing, self.store.items_features(missing), strict=True):
                fresh[item] = ItemRecord.parse(raw)
            if self.max_age > 0:
                if len(self._cache) > self.MAX_ENTRIES:
                    self._cache.clear()
                self._cache.update((item, (now, fresh[item])) for item in missing)
        return [fresh[item] for item in items]


class FeatureBuilder:
    """The ranker's feature rows for a user's candidates, read from the feature store in one pipeline."""

    def __init__(
        self, store: FeatureStore, mf: MatrixFactorisation, cooccurrence: CooccurrenceScorer, max_age: float = 0.0
    ) -> None:
        self.store = store
        self.mf = mf
        self.cooccurrence = cooccurrence
        self.records = ItemRecords(store, max_age)

    def shortlist(self, ctx: UserContext, items: Sequence[str]) -> list[str]:
        """The candidates worth the ranker's time: MF's best, then the best by the built-in score."""
        if len(items) <= MAX_RERANK:
            return list(items)
        cooc = dict(zip(items, self.cooccurrence.score(ctx, items), strict=True))
        ctx.extras["cooc_scores"] = cooc
        chosen = dict.fromkeys(i for i in ctx.extras.get("from_mf", [])[:MF_SHORTLIST] if i in cooc)
        for item in sorted(items, key=lambda i: -cooc[i]):
            if len(chosen) >= MAX_RERANK:
                break
            chosen[item] = None
        return list(chosen)

    def rows(self, ctx: UserContext, items: Sequence[str]) -> np.ndarray:
        known = ctx.extras.get("cooc_scores")
        if known is not None and all(item in known for item in items):
            cooc = [known[item] for item in items]
        else:
            cooc = self.cooccurrence.score(ctx, items)  # also fills ctx.popularity for every item
        recent = [r.item_id for r in ctx.profile.recent]
        records = self.records.get_many([*items, *recent], ctx.now)
        recent_sets = [r.categories for r in records[len(items) :] if r.categories]
        vector = ctx.extras.get("mf_vector")
        mf_scores = self.mf.scores(vector, items) if vector is not None else np.zeros(len(items), np.float32)
        top_pop = ctx.max_popularity or max(ctx.popularity.values(), default=0.0) or 1.0
        profile = ctx.profile
        user_events_log = math.log1p(sum(profile.event_counts.values()))
        from_cooc = {n for neighbours in ctx.neighbours.values() for n, _ in neighbours}
        from_mf = set(ctx.extras.get("from_mf", ()))
        now = ctx.now
        matrix = np.zeros((len(items), len(FEATURE_NAMES)), dtype=np.float32)
        for n, (item, record) in enumerate(zip(items, records[: len(items)], strict=True)):
            popularity = ctx.popularity.get(item, 0.0)
            decayed = self.store.clock.decayed(popularity, now) if popularity else 0.0
            categories = record.categories
            affinity = (sum(1 for c in recent_sets if c & categories) / len(recent)) if recent and categories else 0.0
            first = record.first_ts if record.first_ts is not None else now
            last = record.last_ts if record.last_ts is not None else now
            matrix[n] = (
                mf_scores[n],
                float(item in self.mf.item_index),
                cooc[n],
                math.log1p(max(decayed, 0.0)),
                popularity / top_pop,
                record.positives / (record.events + 1.0),
                math.log1p(record.events),
                max(now - first, 0.0) / DAY,
                max(now - last, 0.0) / DAY,
                user_events_log,
                profile.engagement,
                affinity,
                float(item in from_cooc),
                float(item in from_mf),
            )
        return matrix
