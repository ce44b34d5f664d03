"""Offline evaluation by replay: the protocol of the replay benchmark, on the offline in-process store.

Events are replayed in time order; before each positive event (like, purchase) the recommender is asked for
the user's top k (the user's earlier items excluded, as in serving), then the event is applied to the
features. A hit is the event's item in the list; NDCG@k = 1 / log2(rank + 1) on a hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recloop.core.events import EventType, Interaction
from recloop.core.settings import Settings
from recloop.features.memory_redis import MemoryRedis
from recloop.features.store import FeatureStore
from recloop.serving.context import ServedModel
from recloop.serving.recommender import Recommender

POSITIVE_EVENTS = frozenset({EventType.LIKE, EventType.PURCHASE})
APPLY_CHUNK = 1000


@dataclass
class ReplayMetrics:
    k: int = 10
    positives: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    known_positives: int = 0
    known_hits: int = 0
    known_ndcg_sum: float = 0.0
    recommended: set[str] = field(default_factory=set)
    catalogue: set[str] = field(default_factory=set)

    def record(self, ranked: Sequence[str], item: str, known_user: bool) -> None:
        gain = 1.0 / math.log2(ranked.index(item) + 2) if item in ranked else 0.0
        self.positives += 1
        self.hits += gain > 0
        self.ndcg_sum += gain
        if known_user:
            self.known_positives += 1
            self.known_hits += gain > 0
            self.known_ndcg_sum += gain
        self.recommended.update(ranked)

    def summary(self) -> dict[str, float]:
        return {
            f"hr_at_{self.k}": _ratio(self.hits, self.positives),
            f"ndcg_at_{self.k}": _ratio(self.ndcg_sum, self.positives),
            f"hr_at_{self.k}_known_users": _ratio(self.known_hits, self.known_positives),
            f"ndcg_at_{self.k}_known_users": _ratio(self.known_ndcg_sum, self.known_positives),
            "coverage": _ratio(len(self.recommended), len(self.catalogue)),
            "positives_evaluated": self.positives,
            "positives_known_users": self.known_positives,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def offline_store(settings: Settings, history: Sequence[Interaction] = ()) -> FeatureStore:
    """A feature store in process memory holding `history`, as Redis would after those events."""
    store = FeatureStore(MemoryRedis(), settings)
    for start in range(0, len(history), APPLY_CHUNK):
        store.apply_many(history[start : start + APPLY_CHUNK])
    return store


def replay(
    recommender: Recommender,
    events: Sequence[Interaction],
    k: int = 10,
    known_users: set[str] | None = None,
    on_event: Callable[[Interaction], None] | None = None,
) -> ReplayMetrics:
    """Evaluate then apply each event in order; `on_event` runs after each apply (online learning hooks in)."""
    metrics = ReplayMetrics(k=k)
    known = set(known_users or ())
    store = recommender.store
    for event in events:
        metrics.catalogue.add(event.item_id)
        if event.event_type in POSITIVE_EVENTS:
            ranked = recommender.recommend(event.user_id, k, now=event.timestamp, log=False)
            metrics.record([i.item_id for i in ranked.items], event.item_id, event.user_id in known)
        store.apply(event)
        known.add(event.user_id)
        if on_event is not None:
            on_event(event)
    return metrics


def evaluate_offline(
    settings: Settings,
    history: Sequence[Interaction],
    holdout: Sequence[Interaction],
    model: Callable[[FeatureStore], ServedModel | None] | None = None,
    k: int = 10,
) -> dict[str, float]:
    """HR@k, NDCG@k and coverage of a model (None: the built-in scorers) on a holdout after `history`."""
    store = offline_store(settings, history)
    served = model(store) if model is not None else None
    recommender = Recommender(store, settings, (lambda: served) if served is not None else None)
    metrics = replay(recommender, holdout, k, known_users={e.user_id for e in history})
    metrics.catalogue.update(e.item_id for e in history)
    return metrics.summary()
