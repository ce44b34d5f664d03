"""Exponential time decay without rewriting stored values.

A contribution ``w`` at time ``t`` is stored as ``w * 2**((t - epoch) / half_life)``. Sums of such
values, read at time ``now`` and multiplied by ``2**(-(now - epoch) / half_life)``, are the decayed
sums; rankings by stored value are already rankings by decayed value, so sorted sets never need
rewriting. The epoch is shared through Redis so every process scales alike.

Live, the epoch is the server's time when the first process needed it, never an event's time: a client's event
dated years back must not fix the scale for everyone (its contribution just underflows to zero). Offline replays
of a historical log use the log's first event instead. After MAX_SAFE_EXPONENT half-lives the stored values would
overflow float64; `FeatureStore.rescale_decay` (``python -m recloop.tools.rescale_decay``) moves the epoch to now
and rescales every stored value, with feature updates paused meanwhile (docs/reliability.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.errors import UnavailableError

# float64 overflows past 2**1023; renormalise long before.
MAX_SAFE_EXPONENT = 900.0
# Operators are warned (health) from this age of the epoch on.
RESCALE_DUE_EXPONENT = 800.0
# How long a process trusts the epoch it read for its decayed reads (writes read it with every batch).
EPOCH_REFRESH_SECONDS = 60.0


class DecayEpochExpiredError(UnavailableError):
    code = "decay_epoch_expired"
    hint = "run python -m recloop.tools.rescale_decay"


class DecayClock:
    # The hash fields of Keys.DECAY, as read with every batch of writes (FeatureStore.apply_many).
    FIELDS = ("epoch", "paused_until")

    def __init__(self, redis_client: RedisClient, half_life_seconds: float, *, historical: bool = False) -> None:
        self._redis = redis_client
        self.half_life_seconds = half_life_seconds
        self.historical = historical
        self._epoch: float | None = None
        self._paused_until = 0.0
        self._read_at = 0.0

    def observe(self, values: Sequence[str | None]) -> None:
        """Take the epoch and pause marker as just read from Redis (HMGET of FIELDS)."""
        epoch, paused_until = values
        if epoch is not None:
            self._epoch = float(epoch)
            self._read_at = time.monotonic()
        self._paused_until = float(paused_until) if paused_until else 0.0

    def epoch(self, first_seen: float) -> float:
        """The shared epoch; the first process to need one sets it (to `first_seen` for a historical replay)."""
        if self._epoch is None or (not self.historical and time.monotonic() - self._read_at > EPOCH_REFRESH_SECONDS):
            stored = self._redis.hget(Keys.DECAY, "epoch")
            if stored is None:
                start = first_seen if self.historical else round(time.time(), 3)
                self._redis.hsetnx(Keys.DECAY, "epoch", repr(float(start)))
                stored = self._redis.hget(Keys.DECAY, "epoch")
            self._epoch = float(stored)
            self._read_at = time.monotonic()
        return self._epoch

    def paused(self) -> bool:
        """Whether a rescale holds feature updates (as of the last `observe`)."""
        return self._paused_until > time.time()

    def exponent(self, t: float) -> float:
        return (t - self.epoch(t)) / self.half_life_seconds

    def scale(self, t: float) -> float:
        """Multiplier for a contribution made at time ``t``."""
        exponent = self.exponent(t)
        if exponent > MAX_SAFE_EXPONENT:
            raise DecayEpochExpiredError(
                f"the decay epoch is {exponent:.0f} half-lives old; stored scores must be rescaled to a new epoch"
            )
        return math.pow(2.0, exponent)

    def decayed(self, stored: float, now: float) -> float:
        """The value of a stored sum as seen at ``now``."""
        return stored / self.scale(now) if stored else 0.0
