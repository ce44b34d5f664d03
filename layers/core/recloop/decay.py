"""Exponential time decay without rewriting stored values.

A contribution ``w`` at time ``t`` is stored as ``w * 2**((t - epoch) / half_life)``. Sums of such
values, read at time ``now`` and multiplied by ``2**(-(now - epoch) / half_life)``, are the decayed
sums; rankings by stored value are already rankings by decayed value, so sorted sets never need
rewriting. The epoch is shared through Redis so every process scales alike.
"""

from __future__ import annotations

import math
from typing import Any

from recloop.store import Keys, RedisClient

# float64 overflows past 2**1023; renormalise long before.
MAX_SAFE_EXPONENT = 900.0


class DecayClock:
    def __init__(self, redis_client: RedisClient, half_life_seconds: float) -> None:
        self._redis = redis_client
        self.half_life_seconds = half_life_seconds
        self._epoch: float | None = None

    def epoch(self, first_seen: float) -> float:
        """The shared epoch, fixed by the first event any process saw."""
        if self._epoch is None:
            self._redis.hsetnx(Keys.DECAY, "epoch", repr(float(first_seen)))
            self._epoch = float(self._redis.hget(Keys.DECAY, "epoch"))
        return self._epoch

    def exponent(self, t: float) -> float:
        return (t - self.epoch(t)) / self.half_life_seconds

    def scale(self, t: float) -> float:
        """Multiplier for a contribution made at time ``t``."""
        exponent = self.exponent(t)
        if exponent > MAX_SAFE_EXPONENT:
            raise OverflowError(
                f"decay epoch is {exponent:.0f} half-lives old; stored scores must be rescaled to a new epoch"
            )
        return math.pow(2.0, exponent)

    def decayed(self, stored: float, now: float) -> float:
        """The value of a stored sum as seen at ``now``."""
        return stored / self.scale(now) if stored else 0.0


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
