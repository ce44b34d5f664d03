"""What an online update did, and the state of online learning as the status route reports it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from recloop.learning.online.checkpoints import Checkpoint


class UpdateOutcome(StrEnum):
    PUBLISHED = "published"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"  # the champion changed during the update (an operator); the result is discarded
    NO_MODEL = "no_model"  # no champion with MF vectors: the buffer is drained (the archive keeps the events)
    EMPTY = "empty"


class UpdateResult(BaseModel):
    """What one update did; `of` reads it off the step, `describe` says it in the champion history's words."""

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
    served_judged: int = Field(0, description="positive events that followed a logged recommendation of the champion")
    served_hits: int = Field(0, description="of those, the ones whose item was in that recommendation's top 10")

    @classmethod
    def of(cls, updated: Any, from_version: str, events: int, update_ms: float) -> UpdateResult:
        """An update that ran: ROLLED_BACK until its result is published."""
        step, refit = updated.step, updated.refit
        return cls(
            outcome=UpdateOutcome.ROLLED_BACK,
            events=events,
            from_version=from_version,
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
            served_judged=updated.served_hits.judged if updated.served_hits else 0,
            served_hits=updated.served_hits.hits if updated.served_hits else 0,
        )

    @property
    def served_error(self) -> float | None:
        """The held-out error of the model serving after this update: the updated one if its MF step was kept."""
        return self.error_after if self.mf_updated else self.error_before

    def describe(self) -> str:
        ranker = (
            f", ranker NDCG@10 {self.ranker_ndcg_before:.4f} -> {self.ranker_ndcg_after:.4f}"
            if self.ranker_updated
            else ""
        )
        return f"online update: MF held-out error {self.error_before:.4f} -> {self.error_after:.4f}{ranker}"


class UpdatePoint(BaseModel):
    """One update in the status's history: when, what came of it, and the held-out error before and after."""

    at: str = Field(description="ISO 8601, UTC")
    outcome: UpdateOutcome
    events: int
    error_before: float | None
    error_after: float | None
    update_ms: float | None
    version: str | None = Field(description="the version it published; null when it published none")
    served_judged: int = Field(0, description="positive events that followed a logged recommendation of the champion")
    served_hits: int = Field(0, description="of those, the ones whose item was in that recommendation's top 10")

    @classmethod
    def of(cls, result: UpdateResult, at: str) -> UpdatePoint:
        return cls(
            at=at,
            outcome=result.outcome,
            events=result.events,
            error_before=result.error_before,
            error_after=result.error_after,
            update_ms=result.update_ms,
            version=result.to_version if result.outcome is UpdateOutcome.PUBLISHED else None,
            served_judged=result.served_judged,
            served_hits=result.served_hits,
        )

    def epoch_seconds(self) -> float:
        return datetime.fromisoformat(self.at).timestamp()


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
    recent_updates: list[UpdatePoint] = Field(
        default_factory=list, description="the newest updates, newest first: the held-out error over time"
    )
