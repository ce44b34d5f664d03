"""Trained model versions plugged into the recommender, and the champion a Lambda instance serves."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.models.bundle import ModelBundle, ModelKind
from recloop.serving.context import CandidateSource, Scorer, UserContext
from recloop.serving.scorers import CooccurrenceScorer, MFScorer, RankerScorer
from recloop.serving.sources import MFSource


@dataclass
class TrainedModel:
    """An `mf` or `lgbm` version ready to serve: MF candidates, then MF scores or the LightGBM ranker."""

    version: str
    kind: ModelKind
    model: Any  # MatrixFactorisation (mf) or RankerModel (lgbm)
    store: FeatureStore
    settings: Settings

    def __post_init__(self) -> None:
        from recloop.serving.ranker_features import FeatureBuilder  # numpy: only where a trained model serves

        self.mf = self.model.mf if self.kind is ModelKind.LGBM else self.model
        self._sources: list[CandidateSource] = [MFSource(self.mf)]
        # A model holds hundreds of thousands of long-lived objects: keep them out of the cyclic
        # collector's scans, whose pauses otherwise show up in the latency tail.
        gc.collect()
        gc.freeze()
        if self.kind is ModelKind.LGBM:
            cooccurrence = CooccurrenceScorer(
                self.store, self.settings.popularity_prior_weight, self.settings.popularity_cache_seconds
            )
            self._scorer: Scorer = RankerScorer(
                self.model,
                FeatureBuilder(self.store, self.mf, cooccurrence, self.settings.item_feature_cache_seconds),
                self.version,
            )
        else:
            self._scorer = MFScorer(self.mf, self.version)

    def prepare(self, ctx: UserContext) -> bool:
        from recloop.serving.ranker_features import user_mf_vector

        ctx.extras["mf_vector"] = user_mf_vector(self.mf, ctx)
        # The ranker can rank without an MF vector (other features); MF alone cannot.
        return ctx.extras["mf_vector"] is not None or self.kind is ModelKind.LGBM

    def sources(self) -> list[CandidateSource]:
        return self._sources

    def scorer(self) -> Scorer:
        return self._scorer


logger = Logger(child=True)

DEFAULT_CACHE_DIR = Path("/tmp/recloop-models")


class ChampionProvider:
    """The champion version for this instance, checked against the registry at most every few seconds.

    A new version is loaded from S3 (and kept in /tmp for the instance's later cold loads); if it fails to
    load, the loaded model keeps serving and the failure is recorded in Redis for the health endpoint. With
    no champion, or a `popularity` one, the built-in real-time scorers serve.
    """

    def __init__(
        self,
        registry: Callable[[], Any],
        store: FeatureStore,
        settings: Settings,
        check_seconds: float = 5.0,
        cache_dir: Path = DEFAULT_CACHE_DIR,
    ) -> None:
        self._registry_factory = registry
        self._registry: Any = None
        self.store = store
        self.settings = settings
        self.check_seconds = check_seconds
        self.cache_dir = cache_dir
        self.current: TrainedModel | None = None
        self.current_version: str | None = None
        self.load_error: str | None = None
        self._checked_at = float("-inf")

    def __call__(self) -> TrainedModel | None:
        if time.monotonic() - self._checked_at >= self.check_seconds:
            self._checked_at = time.monotonic()
            self.refresh()
        return self.current

    def refresh(self) -> None:
        try:
            pointer = self.registry.champion()
        except Exception as exc:  # registry unreachable: keep serving what is loaded
            logger.warning("champion pointer unavailable", extra={"error": repr(exc)})
            return
        wanted = pointer.version if pointer else None
        if wanted == self.current_version:
            return
        if wanted is None:
            self.current, self.current_version = None, None
            return
        try:
            self.current = self.load(wanted)
            self.current_version, self.load_error = wanted, None
            logger.info("serving model version", extra={"version": wanted})
        except Exception as exc:  # a version that does not load must never take over
            self.load_error = f"{wanted}: {type(exc).__name__}: {exc}"[:500]
            logger.error("model version failed to load; keeping the previous one", extra={"error": self.load_error})
        self._record_status(wanted)

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    @property
    def serving_version(self) -> str:
        return self.current_version or "builtin"

    def load(self, version: str) -> TrainedModel | None:
        """A registry version ready to serve (None: a `popularity` version, which the built-in scorers serve).

        Raises whatever loading raises: callers decide what serves instead."""
        return self._served(self._bundle(version))

    def _bundle(self, version: str) -> ModelBundle:
        folder = self.cache_dir / version
        if folder.is_dir():
            try:
                return ModelBundle.from_files({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
            except Exception as exc:  # a damaged local copy is replaced from S3
                logger.warning("local model copy unusable", extra={"error": repr(exc)})
        bundle = self.registry.load(version)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in bundle.serialised().items():
            (folder / name).write_bytes(data)
        return bundle

    def _served(self, bundle: ModelBundle) -> TrainedModel | None:
        from recloop.models.loading import load_model

        if bundle.metadata.kind is ModelKind.POPULARITY:
            return None
        return TrainedModel(
            bundle.metadata.version, bundle.metadata.kind, load_model(bundle), self.store, self.settings
        )

    def _record_status(self, wanted: str) -> None:
        try:
            self.store.redis.hset(
                Keys.MODEL_STATUS,
                mapping={
                    "champion": wanted,
                    "serving": self.serving_version,
                    "error": self.load_error or "",
                    "at": repr(time.time()),
                },
            )
        except Exception as exc:  # status is informative; never fail a request for it
            logger.warning("model status not recorded", extra={"error": repr(exc)})


def reported_model_status(redis_client: RedisClient) -> dict[str, str]:
    """What recommend instances last reported: the champion, the version serving, and a load error if any."""
    return redis_client.hgetall(Keys.MODEL_STATUS)
