"""Trained models behind the recommender: MF candidates and scores, and a LightGBM LambdaRank re-ranker.

Features are read from the live feature store at request time (and, for training, from an offline replay of
the same store code), so a model's weights are frozen while its inputs stay fresh:

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
from typing import Any

import numpy as np

from recloop.features import FeatureStore
from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
from recloop.models.leaf_refit import LeafTable
from recloop.models.loading import register_loader
from recloop.models.mf import MatrixFactorisation
from recloop.recommender import CooccurrenceScorer, UserContext
from recloop.store import Keys

RANKER_FILE = "ranker.txt"
FEATURE_NAMES = (
    "mf_score",
    "mf_known",
    "cooc_score",
    "pop_log",
    "pop_share",
    "item_pos_rate",
    "item_events_log",
    "item_age_days",
    "item_idle_days",
    "user_events_log",
    "user_engagement",
    "category_affinity",
    "from_cooc",
    "from_mf",
)
MF_CANDIDATES = 100
# The ranker scores at most this many candidates: MF's best, then the best by co-occurrence and popularity.
MAX_RERANK = 200
MF_SHORTLIST = 50
FOLD_IN_ITEMS = 50
DAY = 86_400.0
NOT_SHORTLISTED = -1e9


def user_mf_vector(mf: MatrixFactorisation, ctx: UserContext) -> np.ndarray | None:
    """The user's trained vector, else one folded in from the user's history as the store holds it now."""
    history = list(ctx.profile.history.items())[-FOLD_IN_ITEMS:]
    return mf.user_vector(ctx.profile.user_id, [i for i, _ in history], [w for _, w in history])


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
            pipe = self.store.redis.pipeline(transaction=False)
            for item in missing:
                pipe.hgetall(Keys.item_features(item))
            for item, raw in zip(missing, pipe.execute(), strict=True):
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


class RankerModel:
    """The `lgbm` kind: MF (candidates and a feature) plus a LightGBM LambdaRank booster.

    A ranker refit online is held as its leaf values (`trees`): the update that produced it needs neither
    its text nor a booster, so the booster is built from the text when first asked for (to serve).
    """

    def __init__(self, mf: MatrixFactorisation, booster: Any = None, trees: LeafTable | None = None) -> None:
        if booster is None and trees is None:
            raise ValueError("a ranker needs its booster or its leaf table")
        self.mf = mf
        self._booster = booster  # lightgbm.Booster
        self.trees = trees  # the booster's leaf values, once parsed or refit

    @property
    def booster(self) -> Any:
        if self._booster is None:
            import lightgbm

            assert self.trees is not None
            self._booster = lightgbm.Booster(model_str=self.trees.text)
        return self._booster

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.booster.predict(rows, num_threads=1)

    def leaf_index(self, rows: np.ndarray) -> np.ndarray:
        """Each row's leaf in each tree (`pred_leaf`). Refits keep the trees' structure, so a booster of
        any of this ranker's ancestors finds the same leaves."""
        booster = self._booster if self._booster is not None else self.leaf_table().structure
        return (booster if booster is not None else self.booster).predict(rows, pred_leaf=True, num_threads=1)

    def leaf_table(self) -> LeafTable:
        """The booster's trees as the online refit reads and rewrites them (parsed once)."""
        if self.trees is None:
            self.trees = LeafTable.parse(self.booster.model_to_string(), structure=self.booster)
        return self.trees

    def to_bundle(self, metadata: ModelMetadata) -> ModelBundle:
        bundle = self.mf.to_bundle(metadata)
        files = dict(bundle.files)
        text = self.trees.text if self.trees is not None else self.booster.model_to_string()
        files[RANKER_FILE] = text.encode()
        metadata.feature_spec = {"features": list(FEATURE_NAMES)}
        return ModelBundle(metadata, files)


class RankerScorer:
    def __init__(self, model: RankerModel, features: FeatureBuilder, model_version: str) -> None:
        self.model = model
        self.features = features
        self.model_version = model_version

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]:
        if not items:
            return []
        chosen = self.features.shortlist(ctx, items)
        rows = self.features.rows(ctx, chosen)
        scores = self.model.predict(rows)
        # Features as they were at serving time: the online refit's training data (recloop.feature_log).
        ctx.extras["served_features"] = (chosen, rows, scores)
        predicted = dict(zip(chosen, scores.tolist(), strict=True))
        return [predicted.get(item, NOT_SHORTLISTED) for item in items]


@register_loader(ModelKind.LGBM)
def load_ranker(bundle: ModelBundle) -> RankerModel:
    import lightgbm

    if list(bundle.metadata.feature_spec.get("features", [])) != list(FEATURE_NAMES):
        raise ValueError("the ranker was trained on other features than this code computes")
    booster = lightgbm.Booster(model_str=bundle.files[RANKER_FILE].decode())
    return RankerModel(MatrixFactorisation.from_bundle(bundle), booster)
