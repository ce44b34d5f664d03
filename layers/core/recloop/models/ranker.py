"""The `lgbm` kind: MF (candidates and a feature) plus a LightGBM LambdaRank re-ranker over FEATURE_NAMES.

The features are computed at request time from the live feature store (`recloop.serving.ranker_features`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
from recloop.models.leaf_refit import LeafTable
from recloop.models.loading import register_loader
from recloop.models.mf import MatrixFactorisation

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


@register_loader(ModelKind.LGBM)
def load_ranker(bundle: ModelBundle) -> RankerModel:
    import lightgbm

    if list(bundle.metadata.feature_spec.get("features", [])) != list(FEATURE_NAMES):
        raise ValueError("the ranker was trained on other features than this code computes")
    booster = lightgbm.Booster(model_str=bundle.files[RANKER_FILE].decode())
    return RankerModel(MatrixFactorisation.from_bundle(bundle), booster)
