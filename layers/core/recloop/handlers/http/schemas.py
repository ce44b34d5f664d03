"""Request and response bodies of the HTTP API: the contract clients see (and the OpenAPI schema)."""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StringConstraints,
    field_validator,
)

from recloop.core.events import RECOMMENDATION_ID_PATTERN, EventType, Identifier, Interaction, new_event_id

MAX_BATCH_EVENTS = 500
# A context travels inside the event's stream record: small, shallow, and JSON the record encoder can write.
MAX_CONTEXT_BYTES = 4096
MAX_CONTEXT_DEPTH = 8
MAX_CONTEXT_KEYS = 64
MAX_CONTEXT_KEY_LENGTH = 128
# Timestamps further in the future than this are clock errors, not events.
MAX_CLOCK_SKEW_SECONDS = 300
EARLIEST_TIMESTAMP = 946_684_800  # 2000-01-01
MAX_ITEMS_PER_UPSERT = 1000
MAX_EXCLUDED_ITEMS = 1000

Category = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^|]+$")]


def _streamable_context(value: dict[str, Any]) -> dict[str, Any]:
    keys = _checked_key_count(value, depth=1)
    if keys > MAX_CONTEXT_KEYS:
        raise ValueError(f"must hold at most {MAX_CONTEXT_KEYS} keys in all")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    except (TypeError, ValueError):
        raise ValueError("must hold JSON values only") from None
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(f"must serialise to at most {MAX_CONTEXT_BYTES} bytes")
    return value


def _checked_key_count(value: Any, depth: int) -> int:
    """Keys at every level of a context, refusing one that is too deep, a long key or a number that is no number."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must hold finite numbers only")
    if not isinstance(value, dict | list):
        return 0
    if depth > MAX_CONTEXT_DEPTH:
        raise ValueError(f"must be nested at most {MAX_CONTEXT_DEPTH} levels deep")
    if isinstance(value, list):
        return sum(_checked_key_count(item, depth + 1) for item in value)
    if any(len(key) > MAX_CONTEXT_KEY_LENGTH for key in value):
        raise ValueError(f"a key must be at most {MAX_CONTEXT_KEY_LENGTH} characters")
    return len(value) + sum(_checked_key_count(item, depth + 1) for item in value.values())


Context = Annotated[
    dict[str, Any],
    AfterValidator(_streamable_context),
    Field(
        description=f"Free-form JSON object: at most {MAX_CONTEXT_BYTES} bytes, {MAX_CONTEXT_DEPTH} levels, "
        f"{MAX_CONTEXT_KEYS} keys of at most {MAX_CONTEXT_KEY_LENGTH} characters, finite numbers"
    ),
]


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
    recommendation_id: str | None = Field(
        None,
        pattern=RECOMMENDATION_ID_PATTERN,
        description="The recommendation (its recommendation_id) that showed the item: the outcome is credited to it",
    )
    event_id: Identifier | None = Field(None, description="Client-chosen id that makes retries idempotent")
    context: Context | None = None

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

    # Documented as interactions, kept raw (SkipValidation): each is validated on its own, so that one bad event
    # is reported alone instead of failing the batch.
    events: list[SkipValidation[InteractionIn]] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorOut(BaseModel):
    """Every 4xx and 5xx body: a stable code, a fixed message, and safe details (the fields at fault, a limit, a
    version). Never exception text: that is logged."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="stable code, e.g. validation_error, body_too_large, feature_store_unavailable")
    message: str
    errors: list[FieldError] | None = Field(None, description="each field at fault, as a dotted path in the body")


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
    context: Context | None = Field(
        None, description="Bounded like an event's context; accepted for clients that send one, not used to rank yet"
    )


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int


class RecommendOut(BaseModel):
    recommendation_id: str
    user_id: str
    items: list[RecommendedItem]
    model_version: str = Field(description="The version that ranked the list (an experiment's variant's, if any)")
    cold_start: bool
    degraded: bool = Field(False, description="True when served from a fallback because a dependency failed")
    experiment_id: str | None = Field(None, description="The running experiment that served the list, if any")
    variant: str | None = Field(None, description="The experiment's variant that served the list")


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    latency_ms: float
    error: str | None = Field(None, description="set when unhealthy; the reason is in the function's log")


class ModelHealth(BaseModel):
    champion: str | None = Field(None, description="the registry's champion version")
    serving: str | None = Field(None, description="what recommend instances last reported serving")
    error: str | None = Field(
        None, description="set when the champion could not be loaded; the reason is in the recommend function's log"
    )


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


class LatencyHistoryOut(BaseModel):
    count: list[int]
    p50_ms: list[float | None] = Field(description="null in a minute without requests")
    p95_ms: list[float | None]
    p99_ms: list[float | None]


class MetricsHistoryOut(BaseModel):
    minutes: list[int] = Field(description="the start of each minute of the window, epoch seconds, oldest first")
    latency: dict[str, LatencyHistoryOut] = Field(description="per endpoint, one value per minute")
    events: dict[str, list[int]] = Field(description="events applied per type, one count per minute")


class MetricsOut(BaseModel):
    window_minutes: int
    latency: dict[str, LatencyOut]
    events: dict[str, int]
    events_total: int
    recommendations_total: int
    cold_start_rate: float
    cache_hit_rate: float
    history: MetricsHistoryOut | None = Field(None, description="with ?history=true: the window minute by minute")
