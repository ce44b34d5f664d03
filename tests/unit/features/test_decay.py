import time

import pytest

from recloop.features.decay import DecayClock, DecayEpochExpiredError
from recloop.features.memory_redis import MemoryRedis

WEEK = 7 * 86_400.0


def test_a_contribution_halves_every_half_life() -> None:
    clock = DecayClock(MemoryRedis(), WEEK, historical=True)
    stored = 1.0 * clock.scale(1_000_000.0)
    assert clock.decayed(stored, 1_000_000.0) == pytest.approx(1.0)
    assert clock.decayed(stored, 1_000_000.0 + WEEK) == pytest.approx(0.5)
    assert clock.decayed(stored, 1_000_000.0 + 3 * WEEK) == pytest.approx(0.125)


def test_later_events_outrank_earlier_ones_of_equal_weight() -> None:
    clock = DecayClock(MemoryRedis(), WEEK)
    assert clock.scale(2_000_000_000.0) > clock.scale(1_900_000_000.0)


def test_a_historical_epoch_is_shared_and_fixed_by_the_first_event() -> None:
    shared = MemoryRedis()
    first, second = DecayClock(shared, WEEK, historical=True), DecayClock(shared, WEEK, historical=True)
    assert first.epoch(500.0) == 500.0
    assert second.epoch(9_999.0) == 500.0


def test_a_live_epoch_is_the_servers_time_whatever_the_first_event_says() -> None:
    """An event dated in 2000 arriving first must not fix the scale: every later event would overflow."""
    shared = MemoryRedis()
    before = time.time()
    first, second = DecayClock(shared, WEEK), DecayClock(shared, WEEK)
    assert before - 1 <= first.epoch(946_684_800.0) <= time.time() + 1
    assert second.epoch(time.time()) == first.epoch(0.0)
    assert first.scale(946_684_800.0) < 1e-100  # the old event's contribution vanishes instead
    assert first.scale(time.time() + 86_400) == pytest.approx(2 ** (1 / 7), rel=1e-3)


def test_overflow_is_refused_with_the_rescale_hint_not_silently_infinite() -> None:
    clock = DecayClock(MemoryRedis(), WEEK, historical=True)
    clock.epoch(0.0)
    with pytest.raises(DecayEpochExpiredError) as refused:
        clock.scale(1000 * WEEK)
    assert "rescale_decay" in refused.value.hint


def test_a_pause_read_with_the_epoch_holds_until_it_passes() -> None:
    clock = DecayClock(MemoryRedis(), WEEK)
    clock.observe(("1000.0", repr(time.time() + 60)))
    assert clock.paused() and clock.epoch(0.0) == 1000.0
    clock.observe(("1000.0", repr(time.time() - 1)))
    assert not clock.paused()
