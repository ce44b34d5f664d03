"""Trending: items ranked by popularity over a short half-life, for users the store has never seen."""

from __future__ import annotations

import math
from typing import Any

from recloop.adapters.redis import Keys, RedisClient


class TrendingRanking:
    """Items ranked by decayed score over a short half-life, in sorted sets that never need rescaling.

    Stored against one fixed epoch, a 48-hour half-life would outgrow float64 within five years. So scores live
    in generations of GENERATION_HALF_LIVES half-lives of Unix time, each scaled from its own start. An event is
    added to its generation and to the next, so when reads move on, the next one already holds everything that
    still counts (what is older than a generation weighs less than 2^-256). A generation's key is written for
    two generations' time and read during the second; it expires a generation after that.
    """

    GENERATION_HALF_LIVES = 256

    def __init__(self, redis_client: RedisClient, half_life_seconds: float) -> None:
        self.redis = redis_client
        self.half_life_seconds = half_life_seconds
        self._expiring: set[int] = set()  # generations this process has set an expiry on

    def generation(self, t: float) -> int:
        return math.floor(t / self.half_life_seconds / self.GENERATION_HALF_LIVES)

    def _scale(self, t: float, generation: int) -> float:
        return math.pow(2.0, t / self.half_life_seconds - generation * self.GENERATION_HALF_LIVES)

    def add(self, pipe: Any, item_id: str, weight: float, t: float) -> None:
        """Queue the contribution of an event at time `t` on `pipe` (weight 0 adds the item, unranked)."""
        current = self.generation(t)
        for generation in (current, current + 1):
            key = Keys.trending(generation)
            pipe.zincrby(key, weight * self._scale(t, generation), item_id)
            if generation not in self._expiring:
                # Set once per process, from its first write: at the earliest the generation before this one
                # began, so 3 generations outlast every read of this key.
                lifetime = 3 * self.GENERATION_HALF_LIVES * self.half_life_seconds
                pipe.expire(key, math.ceil(lifetime))
                self._expiring.add(generation)

    def top(self, limit: int, now: float) -> list[tuple[str, float]]:
        """The `limit` best items and their decayed scores at `now` (weighted events per half-life), best first."""
        generation = self.generation(now)
        scale = self._scale(now, generation)
        top = self.redis.zrevrange(Keys.trending(generation), 0, limit - 1, withscores=True)
        return [(item, score / scale) for item, score in top]
