"""Request and response bodies of the HTTP API: the contract clients see (and the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from recloop.interactions import Identifier

MAX_BATCH_EVENTS = 500
MAX_ITEMS_PER_UPSERT = 1000
MAX_EXCLUDED_ITEMS = 1000

Category = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^|]+$")]


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
