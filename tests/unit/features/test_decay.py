import pytest

from recloop.features.decay import DecayClock

WEEK = 7 * 86_400.0


class FakeHash:
    """Just enough of Redis for the epoch (the decay maths is what is tested here)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def hsetnx(self, key: str, field: str, value: str) -> None:
        self.data.setdefault(field, value)

    def hget(self, key: str, field: str) -> str:
        return self.data[field]


def test_a_contribution_halves_every_half_life() -> None:
    clock = DecayClock(FakeHash(), WEEK)
    stored = 1.0 * clock.scale(1_000_000.0)
    assert clock.decayed(stored, 1_000_000.0) == pytest.approx(1.0)
    assert clock.decayed(stored, 1_000_000.0 + WEEK) == pytest.approx(0.5)
    assert clock.decayed(stored, 1_000_000.0 + 3 * WEEK) == pytest.approx(0.125)


def test_later_events_outrank_earlier_ones_of_equal_weight() -> None:
    clock = DecayClock(FakeHash(), WEEK)
    assert clock.scale(2_000_000.0) > clock.scale(1_000_000.0)


def test_epoch_is_shared_and_fixed_by_the_first_event() -> None:
    shared = FakeHash()
    first, second = DecayClock(shared, WEEK), DecayClock(shared, WEEK)
    assert first.epoch(500.0) == 500.0
    assert second.epoch(9_999.0) == 500.0


def test_overflow_is_refused_not_silently_infinite() -> None:
    clock = DecayClock(FakeHash(), WEEK)
    clock.epoch(0.0)
    with pytest.raises(OverflowError):
        clock.scale(1000 * WEEK)
