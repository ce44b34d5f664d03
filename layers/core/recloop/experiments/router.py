"""Experiments on the recommend path: which running experiment a user is in, which variant serves them, and that
variant's model, loaded beside the champion in the same instance.

A request costs no Redis round trip beyond the recommendation's own most of the time: the running experiments and
each experiment's arm counts (what the bandits allocate on) are kept in process for about a second. Anything that
fails here serves the champion instead: an experiment never fails a recommendation.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from recloop.experiments.allocation import choose_variant, in_experiment
from recloop.experiments.model import Experiment, Variant
from recloop.serving.recommender import Arm

if TYPE_CHECKING:
    from recloop.experiments.counters import ArmCounts, ExperimentCounters
    from recloop.serving.champion import ChampionProvider, TrainedModel

logger = Logger(child=True)

# Versions kept loaded besides the champion: two arms of an experiment and a few spare (each model takes memory).
DEFAULT_LOADED_VERSIONS = 4
# A version that failed to load is not tried again before this, so a broken variant costs one load, not one a request.
LOAD_RETRY_SECONDS = 30.0
# How long the running experiments and their counts are reused in process.
DEFAULT_CACHE_SECONDS = 1.0


class VersionUnavailableError(RuntimeError):
    """A variant's version could not be loaded (recently): its users get the champion."""


class VersionModels:
    """Registry versions loaded for serving, least recently used evicted past `capacity`.

    The champion's own model is reused when a variant names it, and versions load the way the champion does
    (recloop.serving.champion.ChampionProvider.load: a local copy in /tmp, else S3).
    """

    def __init__(
        self,
        champion: ChampionProvider,
        capacity: int = DEFAULT_LOADED_VERSIONS,
        retry_seconds: float = LOAD_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.champion = champion
        self.capacity = capacity
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._loaded: OrderedDict[str, TrainedModel | None] = OrderedDict()
        self._failed_at: dict[str, float] = {}

    def get(self, version: str) -> TrainedModel | None:
        """The version's model (None: a `popularity` version, served by the built-in scorers).

        Raises VersionUnavailableError if it does not load."""
        champion = self.champion()  # current (checked every few seconds), so its model is never loaded twice
        if version == self.champion.current_version:
            return champion
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        failed_at = self._failed_at.get(version)
        if failed_at is not None and self.clock() - failed_at < self.retry_seconds:
            raise VersionUnavailableError(f"{version} failed to load recently")
        try:
            model = self.champion.load(version)
        except Exception as exc:
            self._failed_at[version] = self.clock()
            logger.error("experiment version failed to load", extra={"version": version, "error": repr(exc)})
            raise VersionUnavailableError(f"{version}: {type(exc).__name__}") from exc
        self._failed_at.pop(version, None)
        self._loaded[version] = model
        while len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return model

    @property
    def loaded(self) -> list[str]:
        """Versions held besides the champion, least recently used first."""
        return list(self._loaded)


class RunningExperiments:
    """The experiments serving users, as they assign them now (Experiment.serving: a rollout's current stage), read
    (ExperimentStore.running) at most once per `seconds`; the last list known is kept when they cannot be read."""

    def __init__(
        self,
        read: Callable[[], list[Experiment]],
        seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.seconds = seconds
        self.clock = clock
        self._experiments: list[Experiment] = []
        self._read_at = float("-inf")

    def __call__(self) -> list[Experiment]:
        if self.clock() - self._read_at >= self.seconds:
            self._read_at = self.clock()
            try:
                running = self.read()
            except Exception as exc:  # keep assigning as before; the store is read again in `seconds`
                logger.warning("running experiments unavailable", extra={"error": repr(exc)})
            else:
                # Overlapping experiments: the earliest started takes the users it holds.
                ordered = sorted(running, key=lambda e: (e.started_at or "", e.experiment_id))
                self._experiments = [experiment.serving() for experiment in ordered]
        return self._experiments


@dataclass(frozen=True)
class Assignment:
    """What serves one request of a user in an experiment."""

    experiment: Experiment
    variant: Variant
    model: TrainedModel | None
    counters: ExperimentCounters

    @property
    def arm(self) -> Arm:
        """The arm the recommender serves; it counts the impression with the recommendation's own log."""
        experiment_id, variant = self.experiment.experiment_id, self.variant.name

        def count_impression(pipe: Any, latency_ms: float) -> None:
            self.counters.queue_impression(pipe, experiment_id, variant, latency_ms)

        return Arm(experiment_id, variant, self.model, count_impression)


class ExperimentRouter:
    def __init__(
        self,
        running: RunningExperiments,
        counters: ExperimentCounters,
        models: VersionModels,
        *,
        counts_seconds: float = DEFAULT_CACHE_SECONDS,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.running = running
        self.counters = counters
        self.models = models
        self.counts_seconds = counts_seconds
        self.rng = rng or random.Random()
        self.clock = clock
        self._counts: dict[str, tuple[float, dict[str, ArmCounts]]] = {}

    def route(self, user_id: str) -> Assignment | None:
        """The experiment, variant and model serving this user; None: the champion serves (no experiment holds the
        user, or the experiment's state or the variant's model is unavailable)."""
        for experiment in self.running():
            if not in_experiment(experiment, user_id):
                continue
            try:
                variant = choose_variant(experiment, user_id, self._arm_counts(experiment), self.rng)
                return Assignment(experiment, variant, self.models.get(variant.model_version), self.counters)
            except VersionUnavailableError:
                return None
            except Exception as exc:  # counts unreadable: the champion serves this request
                logger.warning(
                    "experiment assignment failed", extra={"experiment": experiment.experiment_id, "error": repr(exc)}
                )
                return None
        return None

    def _arm_counts(self, experiment: Experiment) -> dict[str, ArmCounts]:
        cached = self._counts.get(experiment.experiment_id)
        if cached is not None and self.clock() - cached[0] < self.counts_seconds:
            return cached[1]
        counts = self.counters.counts(experiment.experiment_id, [v.name for v in experiment.variants])
        live = {e.experiment_id for e in self.running()}  # forget the counts of experiments no longer running
        self._counts = {key: value for key, value in self._counts.items() if key in live}
        self._counts[experiment.experiment_id] = (self.clock(), counts)
        return counts
