"""Online learning: buffered mini-batch updates of the champion, checkpoints, publication or rollback.

The stream consumer appends every record once to the buffer in Redis. When the buffer holds
ONLINE_LEARNING_BUFFER_SIZE events (or on a manual trigger), one update runs under a Redis lock:

1. the champion version is checkpointed (`recloop.learning.online.checkpoints`);
2. its MF vectors get one online step (`recloop.models.online_mf`) on the buffer, whose last part is held out,
   and an `lgbm` champion's ranker a leaf refit on the served-feature log (`recloop.learning.online.update`);
3. if the held-out error did not get worse, the result is registered as a new version (parent = the
   champion) and promoted, so recommend functions serve it within MODEL_CHECK_SECONDS; otherwise nothing
   is published and the update counts as rolled back;
   The promotion is a compare-and-swap on the champion the update started from: if an operator promoted or
   rolled back meanwhile, their choice stands and the update's result is discarded;
4. the events used are removed from the buffer only then, so a failure (Redis or S3 down) leaves them for
   the retry. The published version records how far into the buffer it learned (`OnlinePosition`), so a retry
   after publication skips those events rather than learning them twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from aws_lambda_powertools import Logger

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.checkpoints import Checkpoints
from recloop.learning.online.lock import UpdateLock
from recloop.learning.online.results import OnlineStatus, UpdateOutcome, UpdateResult
from recloop.learning.online.stats import OnlineStats
from recloop.learning.online.update import apply_update, online_hyperparameters, published_metadata
from recloop.models.bundle import ModelKind

logger = Logger(child=True)

# Served-feature records read per Redis call (~5 KB each); a refit usually needs one or two pages.
SERVED_LOG_PAGE = 250
UPDATABLE_KINDS = (ModelKind.MF, ModelKind.LGBM)


class OnlineLearner:
    """Runs updates on the buffered events and answers for their state (status, rollback)."""

    def __init__(self, redis: RedisClient, registry: Any, settings: Settings, params: Any = None) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self._params = params
        self.buffer = OnlineBuffer(redis, settings)
        self.lock = UpdateLock(redis, settings.online_learning_lock_seconds)
        self.stats = OnlineStats(redis)
        self._loaded: tuple[str, Any] | None = None  # (version, model): the last champion loaded

    @cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.registry.objects, self.registry)

    @property
    def params(self) -> Any:
        if self._params is None:
            self._params = online_hyperparameters(self.settings)
        return self._params

    def buffer_full(self) -> bool:
        return self.buffer.size() >= self.settings.online_learning_buffer_size

    def update(self) -> UpdateResult:
        """One update on up to ONLINE_LEARNING_BUFFER_SIZE buffered events (UpdateRunningError if locked)."""
        with self.lock.held():
            try:
                result = self._update()
            except BaseException:
                # A kept MF step is written into the cached champion: after a failure anywhere past it (the ranker,
                # the served log, publication), reload the champion rather than learn on top of an unpublished step.
                self._loaded = None
                raise
        self.stats.record(result)
        if result.outcome is not UpdateOutcome.EMPTY:
            logger.info("online update", extra=result.model_dump(mode="json"))
        return result

    def _update(self) -> UpdateResult:
        pointer = self.registry.champion(use_cache=False)
        metadata = self.registry.get(pointer.version) if pointer else None
        # What the champion has learned already is never learned again: an update that published and then
        # failed to trim (or timed out) left those events at the head of the buffer.
        learned = self.buffer.consumed_through(metadata.online_position if metadata else None)
        entries = self.buffer.oldest(self.settings.online_learning_buffer_size)
        if entries and entries[0].sequence <= learned:
            self.buffer.trim_through(learned)
            entries = [entry for entry in entries if entry.sequence > learned]
        if not entries:
            return UpdateResult(outcome=UpdateOutcome.EMPTY)
        through = entries[-1].sequence
        events = [entry.event for entry in entries]
        if metadata is None or metadata.kind not in UPDATABLE_KINDS:
            self.buffer.trim_through(through)
            return UpdateResult(outcome=UpdateOutcome.NO_MODEL, events=len(events))
        model = self._champion_model(pointer.version)
        self.checkpoints.save(pointer.version, "before online update")
        served = self._served_newest_first() if metadata.kind is ModelKind.LGBM else ()
        started = time.perf_counter()
        updated = apply_update(metadata.kind, model, events, self.params, served)
        result = UpdateResult.of(updated, pointer.version, len(events), (time.perf_counter() - started) * 1000)
        if updated.improved:
            position = self.buffer.position(through)
            published = self._publish(metadata, updated.model, events, result, position)
            if published is None:
                # The champion changed meanwhile (an operator's promotion or rollback): theirs stands, and the
                # events stay buffered for an update of the new champion.
                self._loaded = None
                result.outcome = UpdateOutcome.SUPERSEDED
                return result
            result.to_version = published
            result.outcome = UpdateOutcome.PUBLISHED
            self._loaded = (published, updated.model)
        else:
            logger.warning("online update made the held-out error worse; not published", extra=result.model_dump())
        self.buffer.trim_through(through)
        return result

    def _served_newest_first(self) -> Iterator[Any]:
        """The served-feature log, newest record first, read a page at a time as the refit asks for more.
        Recommend functions append while it is read, so a record seen on two pages is given once; a corrupt
        record is skipped: it must not stop learning."""
        from recloop.serving.served_log import ServedFeatures

        seen: set[tuple[str, float]] = set()
        for start in range(0, self.settings.feature_log_cap, SERVED_LOG_PAGE):
            page = self.redis.lrange(Keys.SERVED_FEATURES, -start - SERVED_LOG_PAGE, -start - 1)
            for raw in reversed(page):
                try:
                    record = ServedFeatures.decode(raw)
                except (ValueError, KeyError, TypeError):
                    logger.warning("unreadable served-feature record skipped")
                    continue
                if (record.user_id, record.ts) not in seen:
                    seen.add((record.user_id, record.ts))
                    yield record
            if len(page) < SERVED_LOG_PAGE:
                return

    def _champion_model(self, version: str) -> Any:
        from recloop.models.loading import load_model

        if self._loaded is None or self._loaded[0] != version:
            self._loaded = (version, load_model(self.registry.load(version)))
        return self._loaded[1]

    def _publish(
        self, parent: Any, model: Any, events: list[Interaction], result: UpdateResult, position: Any
    ) -> str | None:
        """Register the updated model and make it the champion if `parent` still is; None if it no longer is."""
        from recloop.registry.errors import ConcurrentPromotionError

        metadata = published_metadata(parent, events, self.params, result, position)
        self.registry.register(model.to_bundle(metadata))
        try:
            self.registry.promote(metadata.version, reason=result.describe(), expected_current=parent.version)
        except ConcurrentPromotionError:
            logger.warning(
                "the champion changed during the online update; its result is discarded",
                extra={"started_from": parent.version, "discarded": metadata.version},
            )
            self.registry.delete(metadata.version)
            return None
        return metadata.version

    def rollback(self, version: str | None = None) -> Any:
        """Promote a checkpointed version: the one named, else the newest that is not the champion."""
        pointer = self.registry.champion(use_cache=False)
        current = pointer.version if pointer else None
        target = self.checkpoints.rollback_target(current, version)
        promoted = self.registry.promote(
            target.version, reason=f"online learning rollback from {current}", expected_current=current
        )
        self.stats.count_rollback()
        return promoted

    def status(self) -> OnlineStatus:
        size = self.buffer.size()
        capacity = self.settings.online_learning_buffer_size
        pointer = self.registry.champion()
        return OnlineStatus(
            **self.stats.summary(),
            buffer_size=size,
            buffer_capacity=capacity,
            buffer_utilization=round(min(size / capacity, 1.0), 4),
            update_running=self.lock.is_held(),
            current_version=pointer.version if pointer else None,
            learning_rate=self.settings.online_learning_learning_rate,
            batch_size=self.settings.online_learning_batch_size,
            checkpoints=self.checkpoints.newest_first(),
        )
