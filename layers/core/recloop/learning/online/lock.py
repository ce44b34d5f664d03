"""One online update at a time, across every function instance: a Redis lock with an owner token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from recloop.adapters.redis import DELETE_IF_EQUAL, Keys, RedisClient
from recloop.learning.online.errors import UpdateRunningError


class UpdateLock:
    def __init__(self, redis_client: RedisClient, seconds: int) -> None:
        """`seconds`: longer than any update (the function's timeout); a holder killed mid-update (a Lambda
        timeout) blocks the next update for at most this long."""
        self.redis = redis_client
        self.seconds = seconds
        self._release = redis_client.register_script(DELETE_IF_EQUAL)  # released only by the holder that still owns it

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (UpdateRunningError if another holder has it)."""
        token = secrets.token_hex(8)
        if not self.redis.set(Keys.ONLINE_LOCK, token, nx=True, ex=self.seconds):
            raise UpdateRunningError("an online update is already running")
        try:
            yield
        finally:
            self._release(keys=[Keys.ONLINE_LOCK], args=[token])

    def is_held(self) -> bool:
        return bool(self.redis.exists(Keys.ONLINE_LOCK))
