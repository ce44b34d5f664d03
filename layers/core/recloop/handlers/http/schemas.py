"""Request and response bodies of the HTTP API: the contract clients see (and the OpenAPI schema)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from recloop.core.events import EventType, Identifier, Interaction, new_event_id

MAX_BATCH_EVENTS = 500
MAX_CONTEXT_BYTES = 4096
# Timestamps further in the future than this are clock errors, not events.
MAX_CLOCK_SKEW_SECONDS = 300
EARLIEST_TIMESTAMP = 946_684_800  # 2000-01-01
MAX_ITEMS_PER_UPSERT = 1000
MAX_EXCLUDED_ITEMS = 1000

Category = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^|]+$")]


class InteractionIn(BaseModel):
    """An interaction as a client sends it (the guide's body plus optional fields)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    item_id: Identifier
    event_type: EventType
    # NaN and infinity are not times: they would pass the range checks below and break decay arithmetic.
    timestamp: float | None = Field(
        None, allow_inf_nan=False, description="Unix seconds; defaults to the time of receipt"
    )
    recommendation_id: Identifier | None = None
    event_id: Identifier | None = Field(None, description="Client-chosen id that makes retries idempotent")
    context: dict[str, Any] | None = None

    @field_validator("timestamp")
    @classmethod
    def _plausible_time(cls, value: float | None) -> float | None:
        if value is None:
            return value
        if value < EARLIEST_TIMESTAMP:
            raise ValueError("must be unix seconds after 2000-01-01")
        if value > time.time() + MAX_CLOCK_SKEW_SECONDS:
            raise ValueError("must not be in the future")
        return value

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(_json_dumps(value)) > MAX_CONTEXT_BYTES:
            raise ValueError(f"must serialise to at most {MAX_CONTEXT_BYTES} bytes")
        return value

    def to_event(self, received_at: float) -> Interaction:
        return Interaction(
            event_id=self.event_id or new_event_id(),
            user_id=self.user_id,
            item_id=self.item_id,
            event_type=self.event_type,
            timestamp=self.timestamp if self.timestamp is not None else received_at,
            received_at=received_at,
            recommendation_id=self.recommendation_id,
            context=self.context,
        )


class EventAccepted(BaseModel):
    event_id: str
    status: Literal["accepted", "duplicate"]
    features_updated: bool = Field(description="False when the stream consumer will apply the features later")


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Events stay raw here so that one bad event is reported alone instead of failing the batch.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class FieldError(BaseModel):
    field: str
    reason: str


class BatchEventResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected", "failed"]
    event_id: str | None = None
    errors: list[FieldError] | None = None
    features_updated: bool | None = None


class EventBatchOut(BaseModel):
    accepted: int
    rejected: int
    failed: int
    results: list[BatchEventResult]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Identifier
    categories: list[Category] = Field(default_factory=list, max_length=32)
    title: str | None = Field(None, max_length=512)


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_UPSERT)


class ItemsUpserted(BaseModel):
    upserted: int


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    num_recommendations: int = Field(10, ge=1, le=100)
    exclude_item_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_EXCLUDED_ITEMS)
    categories: list[Category] | None = Field(
        None, max_length=32, description="Only items in at least one of these categories"
    )
    context: dict[str, Any] | None = None


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int


class RecommendOut(BaseModel):
    recommendation_id: str
    user_id: str
    items: list[RecommendedItem]
    model_version: str
    cold_start: bool
    degraded: bool = Field(False, description="True when served from a fallback because a dependency failed")


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    latency_ms: float
    error: str | None = None


class ModelHealth(BaseModel):
    champion: str | None = Field(None, description="the registry's champion version")
    serving: str | None = Field(None, description="what recommend instances last reported serving")
    error: str | None = Field(None, description="why the champion could not be loaded, if it could not")


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    components: dict[str, ComponentHealth]
    model: ModelHealth | None = None
    version: str


class LatencyOut(BaseModel):
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


class MetricsOut(BaseModel):
    window_minutes: int
    latency: dict[str, LatencyOut]
    events: dict[str, int]
    events_total: int
    recommendations_total: int
    cold_start_rate: float
    cache_hit_rate: float


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
