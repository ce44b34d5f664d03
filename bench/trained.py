"""Replay configurations with trained models: weights frozen after the warm-up, features live from Redis.

`static_mf` and `static_lgbm` train once on the warm-up half with the product's default hyperparameters
(chosen on the warm-up half only: its last 15% held out), then serve through the same Recommender and
TrainedModel code the recommend Lambda runs, against the live feature store.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from recloop.core.events import Interaction
from recloop.learning.evaluation import FeatureStoreSystem, ReplayContext
from recloop.learning.training import RankerHyperparameters, train_ranker
from recloop.models.bundle import ModelKind
from recloop.models.mf import MFHyperparameters, train_mf
from recloop.serving.champion import TrainedModel
from recloop.serving.recommender import Recommendation, Recommender


class StaticModel(FeatureStoreSystem):
    kind: ModelKind

    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context)
        self.served: TrainedModel | None = None
        self.recommender = Recommender(context.store, context.settings, lambda: self.served)
        self.models: Counter[str] = Counter()
        self.fit_info: dict[str, Any] = {}

    def fit(self, warmup: list[Interaction]) -> None:
        started = time.perf_counter()
        if self.kind is ModelKind.MF:
            model: Any = train_mf(warmup, MFHyperparameters())
        else:
            model, self.fit_info = train_ranker(
                warmup, self.context.settings, MFHyperparameters(), RankerHyperparameters()
            )
        self.fit_info["train_seconds"] = round(time.perf_counter() - started, 1)
        self.served = TrainedModel(
            f"static-{self.kind.value}", self.kind, model, self.context.store, self.context.settings
        )

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        result = self.recommender.recommend(user_id, k, now=now, log=False)
        self.models[result.model_version] += 1
        self.observe(result)
        return [item.item_id for item in result.items]

    def observe(self, result: Recommendation) -> None:
        """What a configuration keeps of each served recommendation (nothing, for a static model)."""

    def details(self) -> dict[str, Any]:
        return {"requests_by_model": dict(self.models), **self.fit_info}


class StaticMF(StaticModel):
    kind = ModelKind.MF


class StaticLGBM(StaticModel):
    kind = ModelKind.LGBM
