import time

import pytest
from pydantic import ValidationError

from recloop.core.events import EVENT_WEIGHTS, EventType
from recloop.handlers.http.schemas import InteractionIn


def test_weights_are_the_guides() -> None:
    assert {t.value: w for t, w in EVENT_WEIGHTS.items()} == {
        "purchase": 1.0,
        "like": 0.8,
        "click": 0.6,
        "view": 0.3,
        "dislike": -0.5,
    }


def test_event_gets_id_and_receipt_time() -> None:
    event = InteractionIn(user_id="u1", item_id="i1", event_type="click").to_event(received_at=1_700_000_000.0)
    assert event.event_id.startswith("evt_")
    assert event.timestamp == 1_700_000_000.0
    assert event.weight == 0.6


def test_client_event_id_and_timestamp_are_kept() -> None:
    event = InteractionIn(
        user_id="u1", item_id="i1", event_type=EventType.LIKE, timestamp=1_600_000_000, event_id="abc-1"
    ).to_event(received_at=1_700_000_000.0)
    assert (event.event_id, event.timestamp) == ("abc-1", 1_600_000_000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "", "item_id": "i", "event_type": "click"}, "user_id"),
        ({"user_id": "u" * 129, "item_id": "i", "event_type": "click"}, "user_id"),
        ({"user_id": "u x", "item_id": "i", "event_type": "click"}, "user_id"),
        ({"user_id": "u", "item_id": "i", "event_type": "share"}, "event_type"),
        ({"user_id": "u", "item_id": 5, "event_type": "click"}, "item_id"),
        ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": time.time() + 3600}, "timestamp"),
        ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": 12}, "timestamp"),
        ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": float("nan")}, "timestamp"),
        ({"user_id": "u", "item_id": "i", "event_type": "click", "context": {"x": "y" * 5000}}, "context"),
        ({"user_id": "u", "item_id": "i", "event_type": "click", "colour": "red"}, "colour"),
    ],
)
def test_invalid_events_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        InteractionIn.model_validate(body)
    assert field in {str(err["loc"][0]) for err in info.value.errors()}


def test_record_round_trips() -> None:
    event = InteractionIn(user_id="u", item_id="i", event_type="view", context={"page": "home"}).to_event(1.7e9)
    assert type(event).model_validate_json(event.to_record()) == event
