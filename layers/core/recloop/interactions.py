"""Interaction events: the types, their learning weights and the validated event model."""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_ID_LENGTH = 128
MAX_CONTEXT_BYTES = 4096

# Identifiers: printable, no whitespace, bounded so keys and stream records stay small.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:@\-]+$")]


class EventType(StrEnum):
    PURCHASE = "purchase"
    LIKE = "like"
    CLICK = "click"
    VIEW = "view"
    DISLIKE = "dislike"


# Signal strength of each event type (the guide's scores).
EVENT_WEIGHTS: dict[EventType, float] = {
    EventType.PURCHASE: 1.0,
    EventType.LIKE: 0.8,
    EventType.CLICK: 0.6,
    EventType.VIEW: 0.3,
    EventType.DISLIKE: -0.5,
}

# Events that count as a conversion of a recommendation.
CONVERSION_EVENTS = frozenset({EventType.PURCHASE, EventType.LIKE, EventType.CLICK})

# Timestamps further in the future than this are clock errors, not events.
MAX_CLOCK_SKEW_SECONDS = 300
EARLIEST_TIMESTAMP = 946_684_800  # 2000-01-01


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


class InteractionIn(BaseModel):
    """An interaction as a client sends it (the guide's body plus optional fields)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    item_id: Identifier
    event_type: EventType
    timestamp: float | None = Field(None, description="Unix seconds; defaults to the time of receipt")
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


class Interaction(BaseModel):
    """An accepted interaction: what goes on the stream and into the features."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    user_id: str
    item_id: str
    event_type: EventType
    timestamp: float
    received_at: float
    recommendation_id: str | None = None
    context: dict[str, Any] | None = None

    @property
    def weight(self) -> float:
        return EVENT_WEIGHTS[self.event_type]

    def to_record(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
