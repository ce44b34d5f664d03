"""Online learning: buffered mini-batch updates of the champion, checkpoints, publication or rollback.

The stream consumer appends every record once to the buffer in Redis. When the buffer holds
ONLINE_LEARNING_BUFFER_SIZE events (or on a manual trigger), one update runs under a Redis lock:

1. the champion version is checkpointed (a record under `checkpoints/` naming the immutable registry
   version; the last MAX_CHECKPOINTS are kept, older checkpoint records are deleted);
2. its MF vectors get one online step (`recloop.models.online_mf`) on the buffer, whose last part is held out;
3. if the held-out error did not get worse, the result is registered as a new version (parent = the
   champion) and promoted, so recommend functions serve it within MODEL_CHECK_SECONDS; otherwise nothing
   is published and the update counts as rolled back;
4. the events used are removed from the buffer only then, so a failure (Redis or S3 down) leaves them for
   the retry.

numpy is imported only by the update itself: status and rollback run in functions without the numeric layer.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field

from recloop.interactions import Interaction
from recloop.models.bundle import ModelKind
from recloop.settings import Settings
from recloop.stream import BUFFER_KEY

logger = Logger(child=True)

LOCK_KEY = "{olb}:lock"
STATS_KEY = "{olb}:stats"
CHECKPOINTS_PREFIX = "checkpoints/"
MAX_CHECKPOINTS = 10
# Served-feature records read per Redis call (~5 KB each); a refit usually needs one or two pages.
SERVED_LOG_PAGE = 250
# Longer than any update: the lock outlives a crashed holder by this much at most.
LOCK_SECONDS = 300
# Release the lock only if this holder still owns it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
UPDATABLE_KINDS = (ModelKind.MF, ModelKind.LGBM)


class UpdateOutcome(StrEnum):
    PUBLISHED = "published"
    ROLLED_BACK = "rolled_back"
    NO_MODEL = "no_model"  # no champion with MF vectors: the buffer is drained (the archive keeps the events)
    EMPTY = "empty"


class UpdateRunningError(RuntimeError):
    """Another update holds the lock."""


class CheckpointNotFoundError(LookupError):
    def __init__(self, version: str) -> None:
        super().__init__(f"no checkpoint of version {version!r}")
        self.version = version


class UpdateResult(BaseModel):
    outcome: UpdateOutcome
    events: int = 0
    from_version: str | None = None
    to_version: str | None = None
    error_before: float | None = None
    error_after: float | None = None
    update_ms: float | None = None
    new_items: int = 0
    updated_users: int = 0
    updated_items: int = 0
    mf_updated: bool = False
    ranker_queries: int = 0
    ranker_ndcg_before: float | None = None
    ranker_ndcg_after: float | None = None
    ranker_updated: bool = False


class Checkpoint(BaseModel):
    version: str
    created_at: str
    reason: str = ""


class OnlineStatus(BaseModel):
    enabled: bool = True
    total_updates: int = Field(description="updates run on a full (or triggered) buffer, published or not")
    published: int
    rollbacks: int = Field(
        description="updates not published because the held-out error got worse, plus manual rollbacks"
    )
    buffer_size: int
    buffer_capacity: int
    buffer_utilization: float
    avg_update_time_ms: float | None
    avg_prediction_error: float | None = Field(
        description="mean held-out error of the models in service after each update"
    )
    last_update_at: str | None
    last_outcome: UpdateOutcome | None
    last_error_before: float | None
    last_error_after: float | None
    update_running: bool
    current_version: str | None
    learning_rate: float
    batch_size: int
    checkpoints: list[Checkpoint]


@dataclass(frozen=True)
class UpdatedModel:
    """The model after one online step: each part updated only where its held-out check passed."""

    model: Any  # the same kind as the input: MatrixFactorisation or RankerModel
    step: Any  # recloop.models.online_mf.OnlineStep: the MF vectors
    refit: Any = None  # recloop.models.online_ranker.RefitStep: the ranker's leaves (lgbm, enough queries)

    @property
    def improved(self) -> bool:
        return self.step.improved or (self.refit is not None and self.refit.improved)


def online_hyperparameters(settings: Settings) -> Any:
    from recloop.models.online_mf import OnlineHyperparameters

    return OnlineHyperparameters(
        batch_size=settings.online_learning_batch_size,
        learning_rate=settings.online_learning_learning_rate,
        refit_decay=settings.online_learning_refit_decay,
        tolerance=settings.online_learning_tolerance,
        attribution_window_seconds=settings.attribution_window_seconds,
    )


def apply_update(
    kind: ModelKind, model: Any, events: list[Interaction], params: Any, served_newest_first: Iterable[Any] = ()
) -> UpdatedModel:
    """One online step of a served model (`mf` or `lgbm`). A kept MF step is written into the model's MF
    (recloop.models.online_mf); a kept ranker refit makes a new RankerModel of the refit leaf values.

    `served_newest_first` is the served-feature log (recloop.feature_log.ServedFeatures), newest record
    first, for the ranker's refit; it is read only as far as the refit needs.
    """
    from recloop.models.online_mf import update_mf

    step = update_mf(model.mf if kind is ModelKind.LGBM else model, events, params)
    if kind is not ModelKind.LGBM:
        return UpdatedModel(step.mf, step)
    from recloop.feature_log import labelled_queries
    from recloop.models.online_ranker import MAX_REFIT_QUERIES, refit_ranker
    from recloop.models.ranker import RankerModel

    queries = labelled_queries(
        served_newest_first,
        events,
        params.attribution_window_seconds,
        split_at=step.heldout_from,
        per_side=MAX_REFIT_QUERIES,
    )
    refit = None
    if len(queries):
        refit = refit_ranker(model, queries, step.heldout_from, params.refit_decay, params.tolerance)
    if refit is not None and refit.improved:
        return UpdatedModel(RankerModel(step.mf, trees=refit.trees), step, refit)
    return UpdatedModel(model, step, refit)  # the ranker as it was, its MF updated in place if the step was kept


class OnlineLearner:
    """Runs updates on the buffered events and answers for their state (status, rollback)."""

    def __init__(self, redis: Any, registry: Any, settings: Settings, params: Any = None) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self._params = params
        self._release = redis.register_script(RELEASE_LOCK)
        self._loaded: tuple[str, Any] | None = None  # (version, model): the last champion loaded

    # ---- the buffer -------------------------------------------------------------------------------------

    def buffer_size(self) -> int:
        return int(self.redis.llen(BUFFER_KEY))

    def buffer_full(self) -> bool:
        return self.buffer_size() >= self.settings.online_learning_buffer_size

    # ---- updates ----------------------------------------------------------------------------------------

    def update(self) -> UpdateResult:
        """One update on up to ONLINE_LEARNING_BUFFER_SIZE buffered events (UpdateRunningError if locked)."""
        token = secrets.token_hex(8)
        if not self.redis.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
            raise UpdateRunningError("an online update is already running")
        try:
            result = self._update()
        except BaseException:
            # A kept MF step is written into the cached champion: after a failure anywhere past it (the ranker,
            # the served log, publication), reload the champion rather than learn on top of an unpublished step.
            self._loaded = None
            raise
        finally:
            self._release(keys=[LOCK_KEY], args=[token])
        self._record(result)
        return result

    def _update(self) -> UpdateResult:
        raw = self.redis.lrange(BUFFER_KEY, 0, self.settings.online_learning_buffer_size - 1)
        if not raw:
            return UpdateResult(outcome=UpdateOutcome.EMPTY)
        events = [Interaction.model_validate_json(line) for line in raw]
        pointer = self.registry.champion(use_cache=False)
        metadata = self.registry.get(pointer.version) if pointer else None
        if metadata is None or metadata.kind not in UPDATABLE_KINDS:
            self.redis.ltrim(BUFFER_KEY, len(raw), -1)
            return UpdateResult(outcome=UpdateOutcome.NO_MODEL, events=len(events))
        model = self._champion_model(pointer.version)
        self.checkpoint(pointer.version, "before online update")
        served = self._served_newest_first() if metadata.kind is ModelKind.LGBM else ()
        started = time.perf_counter()
        updated = apply_update(metadata.kind, model, events, self.params, served)
        update_ms = (time.perf_counter() - started) * 1000
        step, refit = updated.step, updated.refit
        result = UpdateResult(
            outcome=UpdateOutcome.ROLLED_BACK,
            events=len(events),
            from_version=pointer.version,
            error_before=round(step.error_before, 6),
            error_after=round(step.error_after, 6),
            update_ms=round(update_ms, 2),
            new_items=step.new_items,
            updated_users=step.updated_users,
            updated_items=step.updated_items,
            mf_updated=step.improved,
            ranker_queries=refit.train_queries if refit else 0,
            ranker_ndcg_before=round(refit.ndcg_before, 6) if refit else None,
            ranker_ndcg_after=round(refit.ndcg_after, 6) if refit else None,
            ranker_updated=bool(refit and refit.improved),
        )
        if updated.improved:
            result.to_version = self._publish(metadata, updated.model, events, result)
            result.outcome = UpdateOutcome.PUBLISHED
            self._loaded = (result.to_version, updated.model)
        else:
            logger.warning("online update made the held-out error worse; not published", extra=result.model_dump())
        self.redis.ltrim(BUFFER_KEY, len(raw), -1)
        return result

    @property
    def params(self) -> Any:
        if self._params is None:
            self._params = online_hyperparameters(self.settings)
        return self._params

    def _served_newest_first(self) -> Iterator[Any]:
        """The served-feature log, newest record first, read a page at a time as the refit asks for more.
        Recommend functions append while it is read, so a record seen on two pages is given once; a corrupt
        record is skipped: it must not stop learning."""
        from recloop.feature_log import FEATURE_LOG_KEY, ServedFeatures

        seen: set[tuple[str, float]] = set()
        for start in range(0, self.settings.feature_log_cap, SERVED_LOG_PAGE):
            page = self.redis.lrange(FEATURE_LOG_KEY, -start - SERVED_LOG_PAGE, -start - 1)
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

    def _publish(self, parent: Any, model: Any, events: list[Interaction], result: UpdateResult) -> str:
        from recloop.models.bundle import DataWindow, ModelMetadata
        from recloop.registry import new_version_id

        version = new_version_id(parent.kind)
        metadata = ModelMetadata(
            version=version,
            kind=parent.kind,
            parent_version=parent.version,
            data_window=DataWindow(
                start=parent.data_window.start,
                end=max(e.timestamp for e in events),
                interactions=parent.data_window.interactions + len(events),
            ),
            feature_spec=dict(parent.feature_spec),
            hyperparameters={
                **parent.hyperparameters,
                "online": {
                    "batch_size": self.params.batch_size,
                    "learning_rate": self.params.learning_rate,
                    "epochs": self.params.epochs,
                    "refit_decay": self.params.refit_decay,
                },
            },
            metrics={
                name: float(value)
                for name, value in {
                    "online_error_before": result.error_before,
                    "online_error_after": result.error_after if result.mf_updated else result.error_before,
                    "online_events": len(events),
                    "online_ranker_ndcg_before": result.ranker_ndcg_before,
                    "online_ranker_ndcg_after": result.ranker_ndcg_after,
                }.items()
                if value is not None
            },
        )
        self.registry.register(model.to_bundle(metadata))
        self.registry.promote(
            version,
            reason=f"online update: MF held-out error {result.error_before:.4f} -> {result.error_after:.4f}"
            + (
                f", ranker NDCG@10 {result.ranker_ndcg_before:.4f} -> {result.ranker_ndcg_after:.4f}"
                if result.ranker_updated
                else ""
            ),
        )
        return version

    def _record(self, result: UpdateResult) -> None:
        if result.outcome is UpdateOutcome.EMPTY:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(STATS_KEY, "total_updates", 1)
        pipe.hincrby(STATS_KEY, result.outcome.value, 1)
        if result.update_ms is not None:
            pipe.hincrbyfloat(STATS_KEY, "update_ms_sum", result.update_ms)
            pipe.hincrby(STATS_KEY, "timed_updates", 1)
            served_error = result.error_after if result.mf_updated else result.error_before
            pipe.hincrbyfloat(STATS_KEY, "prediction_error_sum", served_error or 0.0)
        pipe.hset(
            STATS_KEY,
            mapping={
                "last_update_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "last_outcome": result.outcome.value,
                "last_error_before": "" if result.error_before is None else result.error_before,
                "last_error_after": "" if result.error_after is None else result.error_after,
            },
        )
        pipe.execute()
        logger.info("online update", extra=result.model_dump(mode="json"))

    # ---- checkpoints --------------------------------------------------------------------------------------

    def checkpoint(self, version: str, reason: str) -> Checkpoint:
        """Record `version` as a checkpoint (idempotent per version) and keep only the newest MAX_CHECKPOINTS."""
        checkpoint = Checkpoint(
            version=version, created_at=datetime.now(UTC).isoformat(timespec="microseconds"), reason=reason
        )
        s3 = self.registry.s3
        s3.put_object(
            Bucket=self.registry.bucket,
            Key=f"{CHECKPOINTS_PREFIX}{version}.json",
            Body=checkpoint.model_dump_json().encode(),
            ContentType="application/json",
        )
        if self._checkpoint_count() > MAX_CHECKPOINTS:  # only then read the records, to order them
            for old in self.checkpoints()[MAX_CHECKPOINTS:]:
                s3.delete_object(Bucket=self.registry.bucket, Key=f"{CHECKPOINTS_PREFIX}{old.version}.json")
                self._prune(old.version)
        return checkpoint

    def _checkpoint_count(self) -> int:
        paginator = self.registry.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.registry.bucket, Prefix=CHECKPOINTS_PREFIX)
        return sum(len(page.get("Contents", [])) for page in pages)

    def _prune(self, version: str) -> None:
        """Delete a version that fell out of the checkpoints if online learning made it and nothing serves it:
        one is published every buffer, and only the last MAX_CHECKPOINTS can be rolled back to."""
        try:
            metadata = self.registry.get(version)
            if "online" in metadata.hyperparameters:
                self.registry.delete(version)
        except Exception as exc:  # pruning is housekeeping: it must never fail an update
            logger.info("online version kept", extra={"model_version": version, "reason": repr(exc)})

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints, newest first."""
        s3 = self.registry.s3
        found: list[Checkpoint] = []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.registry.bucket, Prefix=CHECKPOINTS_PREFIX):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=self.registry.bucket, Key=obj["Key"])["Body"].read()
                found.append(Checkpoint.model_validate(json.loads(body)))
        found.sort(key=lambda c: c.created_at, reverse=True)
        return found

    def rollback(self, version: str | None = None) -> Any:
        """Promote a checkpointed version: the one named, else the newest that is not the champion."""
        pointer = self.registry.champion(use_cache=False)
        current = pointer.version if pointer else None
        checkpoints = self.checkpoints()
        if version is None:
            target = next((c for c in checkpoints if c.version != current), None)
            if target is None:
                raise CheckpointNotFoundError("(previous)")
        else:
            target = next((c for c in checkpoints if c.version == version), None)
            if target is None:
                raise CheckpointNotFoundError(version)
        promoted = self.registry.promote(target.version, reason=f"online learning rollback from {current}")
        self.redis.hincrby(STATS_KEY, "rollbacks", 1)
        return promoted

    # ---- status -----------------------------------------------------------------------------------------

    def status(self) -> OnlineStatus:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(BUFFER_KEY)
        pipe.hgetall(STATS_KEY)
        pipe.exists(LOCK_KEY)
        size, stats, running = pipe.execute()
        stats = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in stats.items()
        }
        timed = int(stats.get("timed_updates", 0))
        pointer = self.registry.champion()
        capacity = self.settings.online_learning_buffer_size

        def number(name: str) -> float | None:
            value = stats.get(name, "")
            return float(value) if value != "" else None

        return OnlineStatus(
            total_updates=int(stats.get("total_updates", 0)),
            published=int(stats.get(UpdateOutcome.PUBLISHED.value, 0)),
            rollbacks=int(stats.get(UpdateOutcome.ROLLED_BACK.value, 0)) + int(stats.get("rollbacks", 0)),
            buffer_size=int(size),
            buffer_capacity=capacity,
            buffer_utilization=round(min(int(size) / capacity, 1.0), 4),
            avg_update_time_ms=round(float(stats["update_ms_sum"]) / timed, 2) if timed else None,
            avg_prediction_error=round(float(stats["prediction_error_sum"]) / timed, 6) if timed else None,
            last_update_at=stats.get("last_update_at"),
            last_outcome=stats.get("last_outcome"),
            last_error_before=number("last_error_before"),
            last_error_after=number("last_error_after"),
            update_running=bool(running),
            current_version=pointer.version if pointer else None,
            learning_rate=self.settings.online_learning_learning_rate,
            batch_size=self.settings.online_learning_batch_size,
            checkpoints=self.checkpoints(),
        )
