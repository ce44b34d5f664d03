"""Interaction events: the types, their learning weights, the event sets that count as positive or as a conversion,
and the accepted interaction. Offline data of any date is an `Interaction`; bounds on time belong to the live API
(`recloop.handlers.http.schemas.InteractionIn`)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ID_LENGTH = 128

# Identifiers: printable, no whitespace, bounded so keys and stream records stay small.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:@\-]+$")]

# What the recommend path names a served list ("rec_" + 32 hex digits); events cite it to be credited to that list.
RECOMMENDATION_ID_PATTERN = r"^rec_[0-9a-f]{32}$"


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
# Events that say the user wanted the item: what quality is judged on (HR@K, NDCG@K) and what learning labels relevant.
POSITIVE_EVENTS = frozenset({EventType.LIKE, EventType.PURCHASE})
# The list length recommendation quality is judged at.
K = 10


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


class Interaction(BaseModel):
    """An accepted interaction: what goes on the stream and into the features."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    user_id: str
    item_id: str
    event_type: EventType
    timestamp: float = Field(allow_inf_nan=False)
    received_at: float = Field(allow_inf_nan=False)
    recommendation_id: str | None = None
    context: dict[str, Any] | None = None

    @property
    def weight(self) -> float:
        return EVENT_WEIGHTS[self.event_type]

    def to_record(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
