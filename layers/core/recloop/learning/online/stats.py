"""Counters and last values of online updates, in one Redis hash shared by every instance."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from recloop.adapters.redis import Keys, RedisClient
from recloop.learning.online.results import UpdateOutcome, UpdatePoint, UpdateResult

# Updates kept in the history: the performance trigger's current window and its trailing baseline.
HISTORY_UPDATES = 200
# Of those, the newest the status shows one by one (the dashboard's held-out error over time).
UPDATE_HISTORY_LENGTH = 50


class OnlineStats:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client

    def record(self, result: UpdateResult, now: float | None = None) -> None:
        if result.outcome is UpdateOutcome.EMPTY:
            return
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=True)
        at = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        pipe.lpush(Keys.ONLINE_UPDATES, UpdatePoint.of(result, at).model_dump_json())
        pipe.ltrim(Keys.ONLINE_UPDATES, 0, HISTORY_UPDATES - 1)
        pipe.hincrby(Keys.ONLINE_STATS, "total_updates", 1)
        pipe.hincrby(Keys.ONLINE_STATS, result.outcome.value, 1)
        if result.update_ms is not None:
            pipe.hincrbyfloat(Keys.ONLINE_STATS, "update_ms_sum", result.update_ms)
            pipe.hincrby(Keys.ONLINE_STATS, "timed_updates", 1)
            pipe.hincrbyfloat(Keys.ONLINE_STATS, "prediction_error_sum", result.served_error or 0.0)
        pipe.hset(
            Keys.ONLINE_STATS,
            mapping={
                "last_update_at": at,
                "last_outcome": result.outcome.value,
                "last_error_before": "" if result.error_before is None else result.error_before,
                "last_error_after": "" if result.error_after is None else result.error_after,
            },
        )
        pipe.execute()

    def count_rollback(self) -> None:
        self.redis.hincrby(Keys.ONLINE_STATS, "rollbacks", 1)

    def held_out_error(self) -> tuple[float, float, int] | None:
        """The champion's held-out error before the last update, the mean held-out error of the models in service
        after each update, and how many updates that mean covers; None before the first timed update."""
        last, total, timed = self.redis.hmget(
            Keys.ONLINE_STATS, ["last_error_before", "prediction_error_sum", "timed_updates"]
        )
        if not timed or not last or int(timed) == 0:
            return None
        return float(last), float(total or 0.0) / int(timed), int(timed)

    def hit_history(self, since: float | None = None) -> list[UpdatePoint]:
        """The updates that judged the champion's served lists, newest first; only those after `since` (epoch
        seconds) if given."""
        points = []
        for raw in self.redis.lrange(Keys.ONLINE_UPDATES, 0, -1):
            point = UpdatePoint.model_validate_json(raw)
            if since is not None and point.epoch_seconds() <= since:
                break
            if point.served_judged:
                points.append(point)
        return points

    def summary(self) -> dict[str, Any]:
        """The status route's view of the counters (averages over timed updates; None where nothing was timed)."""
        stats = {_text(k): _text(v) for k, v in self.redis.hgetall(Keys.ONLINE_STATS).items()}
        timed = int(stats.get("timed_updates", 0))

        def number(name: str) -> float | None:
            value = stats.get(name, "")
            return float(value) if value != "" else None

        return {
            "total_updates": int(stats.get("total_updates", 0)),
            "published": int(stats.get(UpdateOutcome.PUBLISHED.value, 0)),
            "rollbacks": int(stats.get(UpdateOutcome.ROLLED_BACK.value, 0)) + int(stats.get("rollbacks", 0)),
            "avg_update_time_ms": round(float(stats["update_ms_sum"]) / timed, 2) if timed else None,
            "avg_prediction_error": round(float(stats["prediction_error_sum"]) / timed, 6) if timed else None,
            "last_update_at": stats.get("last_update_at"),
            "last_outcome": stats.get("last_outcome"),
            "last_error_before": number("last_error_before"),
            "last_error_after": number("last_error_after"),
            "recent_updates": self.recent_updates(),
        }

    def recent_updates(self) -> list[UpdatePoint]:
        """The newest UPDATE_HISTORY_LENGTH updates, newest first."""
        raw_points = self.redis.lrange(Keys.ONLINE_UPDATES, 0, UPDATE_HISTORY_LENGTH - 1)
        return [UpdatePoint.model_validate_json(raw) for raw in raw_points]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
