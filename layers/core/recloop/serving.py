"""Trained model versions plugged into the recommender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recloop.features import FeatureStore
from recloop.models.bundle import ModelKind
from recloop.recommender import CandidateSource, CooccurrenceScorer, Scorer, UserContext
from recloop.settings import Settings


@dataclass
class TrainedModel:
    """An `mf` or `lgbm` version ready to serve: MF candidates, then MF scores or the LightGBM ranker."""

    version: str
    kind: ModelKind
    model: Any  # MatrixFactorisation (mf) or RankerModel (lgbm)
    store: FeatureStore
    settings: Settings

    def __post_init__(self) -> None:
        from recloop.models.ranker import FeatureBuilder, MFScorer, MFSource, RankerScorer

        self.mf = self.model.mf if self.kind is ModelKind.LGBM else self.model
        self._sources: list[CandidateSource] = [MFSource(self.mf)]
        if self.kind is ModelKind.LGBM:
            cooccurrence = CooccurrenceScorer(self.store, self.settings.popularity_prior_weight)
            self._scorer: Scorer = RankerScorer(
                self.model, FeatureBuilder(self.store, self.mf, cooccurrence), self.version
            )
        else:
            self._scorer = MFScorer(self.mf, self.version)

    def prepare(self, ctx: UserContext) -> bool:
        from recloop.models.ranker import user_mf_vector

        ctx.extras["mf_vector"] = user_mf_vector(self.mf, ctx)
        # The ranker can rank without an MF vector (other features); MF alone cannot.
        return ctx.extras["mf_vector"] is not None or self.kind is ModelKind.LGBM

    def sources(self) -> list[CandidateSource]:
        return self._sources

    def scorer(self) -> Scorer:
        return self._scorer
