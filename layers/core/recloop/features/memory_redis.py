"""An in-process store with the Redis commands the feature store uses, for offline point-in-time replays.

Training builds its rows by replaying the event log through the very same `FeatureStore` and feature code
that serve requests, so a training row holds the features as they were just before its event, never values
from the future, and training and serving cannot drift apart. Replaying into a Lambda's memory needs no
Redis server; `tests/integration/features/test_memory_redis.py` checks it answers exactly as a real server does.
Only the commands and options RecLoop uses are implemented.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any


class MemoryRedis:
    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.zsets: dict[str, SortedSet] = {}
        self.sets: dict[str, set[str]] = {}

    def pipeline(self, transaction: bool = False) -> MemoryPipeline:
        return MemoryPipeline(self)

    def batch(self) -> MemoryPipeline:
        """What `recloop.adapters.redis.BatchWriter.batch` gives a real server's client: queued writes, run in order."""
        return MemoryPipeline(self)

    # strings
    def set(self, key: str, value: Any, nx: bool = False, ex: int | None = None) -> bool | None:
        if nx and key in self.strings:
            return None
        self.strings[key] = str(value)
        return True

    def get(self, key: str) -> str | None:
        return self.strings.get(key)

    def expire(self, key: str, seconds: int) -> bool:
        return True  # an offline replay is short-lived; nothing expires during it

    # hashes
    def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        table = self.hashes.setdefault(key, {})
        value = int(table.get(field, 0)) + int(amount)
        table[field] = str(value)
        return value

    def hincrbyfloat(self, key: str, field: str, amount: float) -> float:
        table = self.hashes.setdefault(key, {})
        value = float(table.get(field, 0.0)) + float(amount)
        table[field] = repr(value)
        return value

    def hset(self, key: str, field: str | None = None, value: Any = None, mapping: dict | None = None) -> int:
        table = self.hashes.setdefault(key, {})
        items = dict(mapping or {})
        if field is not None:
            items[field] = value
        added = sum(1 for f in items if f not in table)
        table.update({f: str(v) for f, v in items.items()})
        return added

    def hsetnx(self, key: str, field: str, value: Any) -> bool:
        table = self.hashes.setdefault(key, {})
        if field in table:
            return False
        table[field] = str(value)
        return True

    def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    def hmget(self, key: str, fields: Iterable[str]) -> list[str | None]:
        table = self.hashes.get(key, {})
        return [table.get(f) for f in fields]

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    def hkeys(self, key: str) -> list[str]:
        return list(self.hashes.get(key, {}))

    # lists
    def lpush(self, key: str, *values: Any) -> int:
        items = self.lists.setdefault(key, [])
        for value in values:
            items.insert(0, str(value))
        return len(items)

    def ltrim(self, key: str, start: int, end: int) -> bool:
        if key in self.lists:
            self.lists[key] = _slice(self.lists[key], start, end)
        return True

    def lrange(self, key: str, start: int, end: int) -> list[str]:
        return _slice(self.lists.get(key, []), start, end)

    # sets
    def sadd(self, key: str, *members: Any) -> int:
        target = self.sets.setdefault(key, set())
        before = len(target)
        target.update(str(m) for m in members)
        return len(target) - before

    # sorted sets
    def zincrby(self, key: str, amount: float, member: str) -> float:
        zset = self.zsets.setdefault(key, SortedSet())
        return zset.set(member, (zset.get(member) or 0.0) + float(amount))

    def zadd(self, key: str, mapping: dict[str, float], nx: bool = False) -> int:
        zset = self.zsets.setdefault(key, SortedSet())
        added = 0
        for member, score in mapping.items():
            if nx and zset.get(member) is not None:
                continue
            added += zset.get(member) is None
            zset.set(member, float(score))
        return added

    def zscore(self, key: str, member: str) -> float | None:
        zset = self.zsets.get(key)
        return zset.get(member) if zset else None

    def zmscore(self, key: str, members: Iterable[str]) -> list[float | None]:
        zset = self.zsets.get(key)
        return [zset.get(m) if zset else None for m in members]

    def zremrangebyrank(self, key: str, start: int, end: int) -> int:
        """Only the form RecLoop uses: drop the lowest-ranked members beyond a cap (start 0, end -cap-1)."""
        if start != 0 or end >= 0:
            raise NotImplementedError("zremrangebyrank is supported as (0, -cap-1) only")
        zset = self.zsets.get(key)
        return zset.drop_lowest(len(zset) - (-end - 1)) if zset else 0

    def zrevrange(self, key: str, start: int, end: int, withscores: bool = False) -> list:
        zset = self.zsets.get(key)
        ordered = zset.descending(start, end) if zset else []
        return ordered if withscores else [member for member, _ in ordered]


class SortedSet:
    """Members kept in Redis order, ascending by (score, member), so ranges cost a slice, not a sort."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        self.order: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.scores)

    def get(self, member: str) -> float | None:
        return self.scores.get(member)

    def set(self, member: str, score: float) -> float:
        old = self.scores.get(member)
        if old is not None:
            del self.order[bisect.bisect_left(self.order, (old, member))]
        self.scores[member] = score
        bisect.insort(self.order, (score, member))
        return score

    def drop_lowest(self, count: int) -> int:
        if count <= 0:
            return 0
        for _, member in self.order[:count]:
            del self.scores[member]
        del self.order[:count]
        return count

    def descending(self, start: int, end: int) -> list[tuple[str, float]]:
        reverse = self.order[::-1] if start != 0 or end < 0 else self.order[: -end - 2 : -1]
        if start != 0 or end < 0:
            reverse = _slice(reverse, start, end)
        return [(member, score) for score, member in reverse]


class MemoryPipeline:
    """Queues calls and runs them in order on execute(), like a non-transactional redis-py pipeline."""

    def __init__(self, store: MemoryRedis) -> None:
        self.store = store
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        calls = self.calls

        def queue(*args: Any, **kwargs: Any) -> MemoryPipeline:
            calls.append((method, args, kwargs))
            return self

        setattr(self, name, queue)  # later calls of the same command skip __getattr__
        return queue

    def execute(self) -> list[Any]:
        calls = list(self.calls)
        self.calls.clear()
        return [method(*args, **kwargs) for method, args, kwargs in calls]


def _slice(items: list, start: int, end: int) -> list:
    """Redis' inclusive range with negative indexes."""
    length = len(items)
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end = length + end
    return items[start : end + 1] if start <= end else []
