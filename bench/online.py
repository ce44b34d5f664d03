"""Replay configurations of online learning: the champion's MF vectors updated from the stream in buffers.

`online` trains the LightGBM champion on the warm-up half like `static_lgbm`, then buffers stream events as
the stream consumer does and, every ONLINE_LEARNING_BUFFER_SIZE events, runs the same update the
OnlineUpdateFunction runs (`recloop.online.apply_update`), publishing the result only if the held-out part
of the buffer did not get worse. `online_features_only` is the same loop with weight updates off: features
stay real-time, weights stay as trained.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.trained import StaticModel
from recloop.core.events import Interaction
from recloop.learning.online.results import UpdateOutcome, UpdateResult
from recloop.learning.online.update import apply_update, online_hyperparameters
from recloop.models.bundle import ModelKind
from recloop.serving.champion import TrainedModel


class OnlineLearning(StaticModel):
    kind = ModelKind.LGBM
    updates_enabled = True

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.buffer: list[Interaction] = []
        self.outcomes: Counter[str] = Counter()
        self.hyperparameters = online_hyperparameters(context.settings)
        self.step = 0
        self.served_log: list[Any] = []  # what the recommend path logs to Redis (recloop.feature_log)

    def observe(self, result: Any) -> None:
        if result.served_features is not None:
            self.served_log.append(result.served_features)

    def ingest(self, event: Interaction) -> None:
        self.buffer.append(event)
        if len(self.buffer) < self.context.settings.online_learning_buffer_size:
            return
        events, self.buffer = self.buffer, []
        if not self.updates_enabled or self.served is None:
            self.outcomes["not_updated"] += 1
            return
        self.step += 1
        started = time.perf_counter()
        result = apply_update(
            self.served.kind, self.served.model, events, self.hyperparameters, reversed(self.served_log)
        )
        record = UpdateResult.of(result, self.served.version, len(events), (time.perf_counter() - started) * 1000)
        self.served_log = self.served_log[-self.context.settings.feature_log_cap :]
        if result.refit is not None:
            self.outcomes["ranker_refit_kept" if result.refit.improved else "ranker_refit_dropped"] += 1
        self.outcomes["mf_step_kept" if result.step.improved else "mf_step_dropped"] += 1
        if result.improved:
            record.to_version = self.publish(result.model, events, record)
            record.outcome = UpdateOutcome.PUBLISHED
            self.served = TrainedModel(
                record.to_version, self.kind, result.model, self.context.store, self.context.settings
            )
            self.outcomes["published"] += 1
        else:
            self.outcomes["rolled_back"] += 1
        self.updated(record)

    def publish(self, model: Any, events: list[Interaction], record: UpdateResult) -> str:
        """The version name an update that passed its held-out check is served under."""
        return f"online-{self.step}"

    def updated(self, record: UpdateResult) -> None:
        """What a configuration keeps of each update (nothing here)."""

    def details(self) -> dict[str, Any]:
        return {**super().details(), "updates": dict(self.outcomes)}


class OnlineFeaturesOnly(OnlineLearning):
    updates_enabled = False
