"""Per-item values read from the feature store, reused across requests for a moment of request time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


class ItemCache[Value]:
    """Values of items (`fetch`: the values of a list of items, in one round trip), each reused for at most
    `max_age` seconds of request time.

    Candidates repeat across requests (popular items above all) and an item's values move slowly, so a short
    reuse spares most reads. With max_age 0 nothing is kept: offline replays and training see the store exactly
    at each request's time.
    """

    MAX_ENTRIES = 200_000

    def __init__(self, fetch: Callable[[list[str]], Sequence[Value]], max_age: float) -> None:
        self.fetch = fetch
        self.max_age = max_age
        self._cache: dict[str, tuple[float, Value]] = {}

    def get_many(self, items: Sequence[str], now: float) -> list[Value]:
        """One value per item, in order; those not held are read in one fetch."""
        values = self.held(items, now)
        missing = [item for item in dict.fromkeys(items) if item not in values]
        if missing:
            fetched = dict(zip(missing, self.fetch(missing), strict=True))
            self.keep(fetched.items(), now)
            values.update(fetched)
        return [values[item] for item in items]

    def held(self, items: Iterable[str], now: float) -> dict[str, Value]:
        """The values held for these items, read at most `max_age` seconds before `now` (and never after it: a
        request for an earlier time must not see the future)."""
        if self.max_age <= 0:
            return {}
        cache, max_age = self._cache, self.max_age
        values = {}
        for item in items:
            entry = cache.get(item)
            if entry is not None and 0.0 <= now - entry[0] <= max_age:
                values[item] = entry[1]
        return values

    def keep(self, values: Iterable[tuple[str, Value]], now: float) -> None:
        """Hold values just read at request time `now`."""
        if self.max_age <= 0:
            return
        if len(self._cache) > self.MAX_ENTRIES:
            self._cache.clear()
        self._cache.update((item, (now, value)) for item, value in values)
