"""The live hit rate of served lists: each positive event against the user's latest logged recommendation."""

from __future__ import annotations

import numpy as np

from recloop.core.events import EventType, Interaction
from recloop.serving.served_log import ServedFeatures, served_hits

T0 = 1_700_000_000.0
WINDOW = 3600.0


def served(user: str, t: float, items: list[str]) -> ServedFeatures:
    return ServedFeatures(user, t, "v1", tuple(items), np.zeros((len(items), 2), dtype=np.float32))


def event(user: str, item: str, t: float, kind: EventType = EventType.LIKE) -> Interaction:
    return Interaction(
        event_id=f"{user}-{item}-{t}", user_id=user, item_id=item, event_type=kind, timestamp=t, received_at=t
    )


def ranked(prefix: str, count: int = 12) -> list[str]:
    return [f"{prefix}{n}" for n in range(count)]


def test_a_positive_event_is_a_hit_when_its_item_was_in_the_latest_top_10() -> None:
    log = [served("u1", T0, ranked("a")), served("u2", T0, ranked("b"))]
    events = [event("u1", "a3", T0 + 60), event("u2", "b11", T0 + 60)]  # b11 was ranked 12th: not in the top 10
    assert served_hits(reversed(log), events, WINDOW) == (2, 1)


def test_the_latest_recommendation_before_the_event_is_the_one_judged() -> None:
    log = [served("u1", T0, ranked("old")), served("u1", T0 + 100, ranked("new")), served("u1", T0 + 900, ["x"])]
    # The list served after the event did not cause it; the one before it, the newer of two, did.
    assert served_hits(reversed(log), [event("u1", "new0", T0 + 500)], WINDOW) == (1, 1)
    assert served_hits(reversed(log), [event("u1", "old0", T0 + 500)], WINDOW) == (1, 0)


def test_events_without_a_recommendation_in_the_window_and_non_positive_events_are_not_judged() -> None:
    log = [served("u1", T0, ranked("a"))]
    events = [
        event("u1", "a0", T0 + WINDOW + 1),  # too late for the window
        event("u2", "a0", T0 + 10),  # never recommended anything
        event("u1", "a1", T0 + 10, EventType.VIEW),  # not a positive
        event("u1", "a2", T0 + 10, EventType.PURCHASE),
    ]
    assert served_hits(reversed(log), events, WINDOW) == (1, 1)


def test_the_log_is_read_no_further_back_than_the_window_before_the_oldest_positive() -> None:
    read: list[float] = []

    def newest_first():
        for t in (T0 + 5000, T0 + 4000, T0 + 1000, T0):
            read.append(t)
            yield served("u1", t, ranked("a"))

    served_hits(newest_first(), [event("u1", "a0", T0 + 5500)], WINDOW)
    assert read == [T0 + 5000, T0 + 4000, T0 + 1000]  # stops at the first record older than 5500 - 3600
