"""Peer systems for the replay benchmark: well-known libraries run under the same protocol.

``ImplicitALS`` is the ``implicit`` library's ALS (Hu, Koren, Volinsky 2008), trained once on the
warm-up half and never retrained. Every request folds the user in from their interactions so far
(warm-up and stream) with ``recalculate_user=True``, so new users and new interactions of known
users are used, but items first seen after the warm-up cannot be recommended: that is the
limitation of a static factor model this row measures.

Fixed hyperparameters, none chosen on the stream half of any data set:

- factors 64, iterations 15, regularization 0.05, random_state 42 (set a priori, never tuned);
- confidence of a (user, item) pair: the sum of the user's event weights on it (purchase 1.0,
  like 0.8, click 0.6, view 0.3; dislikes dropped), times ``alpha``;
- ``alpha`` 40: implicit treats a stored value as the confidence of a positive, against 1 for every
  unobserved pair, so raw weights below 1 would make an observed view count less than an unobserved
  item. alpha was chosen from {1, 10, 40} by replaying only the first 50,000 MovieTweetings events
  (``--limit 50000``: trained on the first quarter of the data, evaluated on the second quarter),
  all inside the full run's warm-up half: HR@10 0.0468, 0.0590, 0.0600. 40 is also the value of
  Hu et al.

A user with no interaction the model knows (a cold user) gets a zero factor from the fold-in, so an
arbitrary ranking; such requests are served the warm-up's most popular items (by summed
confidence) instead, as a deployment of this model would, and counted in ``details``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from recloop.core.events import EVENT_WEIGHTS, EventType, Interaction

ALS_FACTORS = 64
ALS_ITERATIONS = 15
ALS_REGULARIZATION = 0.05
ALS_ALPHA = 40.0
ALS_RANDOM_STATE = 42

# topk's score for a filtered item.
FILTERED_SCORE = float(np.finfo(np.float32).min)

# Confidence weights; dislikes carry no positive confidence and are dropped from the matrix.
CONFIDENCE: dict[EventType, float] = {kind: w for kind, w in EVENT_WEIGHTS.items() if w > 0}


class ImplicitALS:
    """``implicit.cpu.als.AlternatingLeastSquares`` trained on the warm-up, users folded in per request."""

    def __init__(self, context: Any = None, alpha: float = ALS_ALPHA) -> None:
        self.alpha = alpha
        self.model: Any = None
        self._blas_limits: Any = None
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        # user -> model item index -> summed event weight (warm-up and stream, known items only)
        self.rows: dict[str, dict[int, float]] = defaultdict(dict)
        # user -> model item indices the user disliked and never engaged with positively
        self.disliked: dict[str, set[int]] = defaultdict(set)
        self.model_users = 0
        self.popular: list[int] = []  # warm-up items by summed confidence, for cold users
        self.requests = 0
        self.cold_fallbacks = 0
        self.fitted = False
        self.stream_positives_unknown = 0  # stream likes/purchases of items the model cannot recommend

    def fit(self, warmup: Sequence[Interaction]) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        for event in warmup:
            if event.event_type in CONFIDENCE and event.item_id not in self.item_index:
                self.item_index[event.item_id] = len(self.item_ids)
                self.item_ids.append(event.item_id)
        for event in warmup:
            self.ingest(event)
        users = [user for user, row in self.rows.items() if row]
        rows, cols, values = [], [], []
        for n, user in enumerate(users):
            for item, weight in self.rows[user].items():
                rows.append(n)
                cols.append(item)
                values.append(weight * self.alpha)
        matrix = csr_matrix((values, (rows, cols)), shape=(len(users), len(self.item_ids)), dtype=np.float32)
        totals = np.asarray(matrix.sum(axis=0)).ravel()
        self.popular = [int(i) for i in np.argsort(-totals, kind="stable")]
        self.model_users = len(users)
        # implicit wants single-threaded BLAS (it parallelises its solver itself); with BLAS threads a
        # one-user fold-in was over ten times slower. Restored in close().
        self._blas_limits = threadpool_limits(1, "blas")
        self.model = AlternatingLeastSquares(
            factors=ALS_FACTORS,
            regularization=ALS_REGULARIZATION,
            alpha=1.0,  # the scaling is applied above, so the fold-in rows below use the same scale
            iterations=ALS_ITERATIONS,
            random_state=ALS_RANDOM_STATE,
        )
        self.model.fit(matrix, show_progress=False)
        self.model.num_threads = 1  # requests are one user each: threads only add overhead
        self.fitted = True

    def ingest(self, event: Interaction) -> None:
        item = self.item_index.get(event.item_id)
        if item is None:  # unknown to the model: neither usable for fold-in nor recommendable
            if self.fitted and event.event_type in (EventType.LIKE, EventType.PURCHASE):
                self.stream_positives_unknown += 1
            return
        weight = CONFIDENCE.get(event.event_type)
        if weight is None:
            if item not in self.rows[event.user_id]:
                self.disliked[event.user_id].add(item)
            return
        row = self.rows[event.user_id]
        row[item] = row.get(item, 0.0) + weight
        self.disliked[event.user_id].discard(item)

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        self.requests += 1
        row = self.rows.get(user_id)
        disliked = self.disliked.get(user_id, set())
        if not row:
            self.cold_fallbacks += 1
            return [self.item_ids[i] for i in self.popular if i not in disliked][:k]
        cols = np.fromiter(row.keys(), dtype=np.int32, count=len(row))
        values = np.fromiter(row.values(), dtype=np.float32, count=len(row)) * np.float32(self.alpha)
        user_items = csr_matrix(
            (values, cols, np.array([0, len(row)], dtype=np.int32)), shape=(1, len(self.item_ids)), dtype=np.float32
        )
        ids, scores = self.model.recommend(
            0,  # ignored with recalculate_user=True: the factor comes from user_items
            user_items,
            N=k,
            filter_already_liked_items=True,
            filter_items=np.fromiter(disliked, dtype=np.int32) if disliked else None,
            recalculate_user=True,
        )
        # Filtered items come back at the bottom with the lowest float32 score when fewer than k remain.
        return [self.item_ids[i] for i, score in zip(ids, scores, strict=True) if i >= 0 and score > FILTERED_SCORE]

    def details(self) -> dict[str, Any]:
        return {
            "model_items": len(self.item_ids),
            "model_users": self.model_users,
            "requests": self.requests,
            "cold_fallbacks": self.cold_fallbacks,
            "stream_positives_on_items_unknown_to_model": self.stream_positives_unknown,
            "alpha": self.alpha,
        }

    def close(self) -> None:
        self.model = None
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None


class ImplicitALSRetrain(ImplicitALS):
    """``ImplicitALS`` retrained from scratch on everything seen so far every 10% of the stream.

    The stream half is as long as the warm-up (the split is 50%), so a retrain runs every
    ``len(warmup) // 10`` stream events; between retrains users are folded in per request as in
    ``ImplicitALS``. Items first seen in the stream become recommendable at the next retrain. Same fixed
    hyperparameters as ``ImplicitALS``.
    """

    RETRAINS_PER_STREAM = 10

    def __init__(self, context: Any = None, alpha: float = ALS_ALPHA) -> None:
        super().__init__(context, alpha)
        self.history: list[Interaction] = []
        self.every = 0
        self.since_retrain = 0
        self.retrains = 0
        self.stream_positives_unknown_total = 0

    def fit(self, warmup: Sequence[Interaction]) -> None:
        self.history = list(warmup)
        self.every = max(1, len(warmup) // self.RETRAINS_PER_STREAM)
        super().fit(warmup)

    def ingest(self, event: Interaction) -> None:
        super().ingest(event)
        if not self.fitted:
            return
        self.history.append(event)
        self.since_retrain += 1
        if self.since_retrain >= self.every:
            self._retrain()

    def _retrain(self) -> None:
        self.stream_positives_unknown_total += self.stream_positives_unknown
        self.close()
        self.item_index, self.item_ids = {}, []
        self.rows, self.disliked = defaultdict(dict), defaultdict(set)
        self.fitted = False
        self.stream_positives_unknown = 0
        self.since_retrain = 0
        self.retrains += 1
        super().fit(self.history)

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "retrains": self.retrains,
            "retrain_every_events": self.every,
            "stream_positives_on_items_unknown_to_model": self.stream_positives_unknown_total
            + self.stream_positives_unknown,
        }
