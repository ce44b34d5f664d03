"""Per-item values reused for a moment of request time, never from after a request's time."""

from __future__ import annotations

from recloop.serving.item_cache import ItemCache


class Source:
    def __init__(self) -> None:
        self.version = 0
        self.reads: list[list[str]] = []

    def fetch(self, items: list[str]) -> list[str]:
        self.reads.append(items)
        return [f"{item}@{self.version}" for item in items]


def test_values_are_reused_within_max_age_and_read_again_after() -> None:
    source = Source()
    cache = ItemCache(source.fetch, max_age=2.0)
    assert cache.get_many(["a", "b", "a"], now=100.0) == ["a@0", "b@0", "a@0"]
    source.version = 1
    assert cache.get_many(["a", "c"], now=101.5) == ["a@0", "c@1"]  # a within 2 s: reused
    assert cache.get_many(["a", "c"], now=102.5) == ["a@1", "c@1"]  # a read 2.5 s ago: read again
    assert source.reads == [["a", "b"], ["c"], ["a"]]


def test_a_request_for_an_earlier_time_never_sees_a_value_read_later() -> None:
    source = Source()
    cache = ItemCache(source.fetch, max_age=5.0)
    cache.get_many(["a"], now=100.0)
    source.version = 1
    assert cache.held(["a"], now=99.0) == {}
    assert cache.get_many(["a"], now=99.0) == ["a@1"]


def test_max_age_zero_reads_every_value_every_time() -> None:
    source = Source()
    cache = ItemCache(source.fetch, max_age=0.0)
    cache.get_many(["a"], now=1.0)
    cache.keep([("b", "b@kept")], now=1.0)
    cache.get_many(["a", "b"], now=1.0)
    assert source.reads == [["a"], ["a", "b"]]
