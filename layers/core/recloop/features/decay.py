"""Exponential time decay without rewriting stored values.

A contribution ``w`` at time ``t`` is stored as ``w * 2**((t - epoch) / half_life)``. Sums of such
values, read at time ``now`` and multiplied by ``2**(-(now - epoch) / half_life)``, are the decayed
sums; rankings by stored value are already rankings by decayed value, so sorted sets never need
rewriting. The epoch is shared through Redis so every process scales alike.
"""

from __future__ import annotations

import math

from recloop.adapters.redis import Keys, RedisClient

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
