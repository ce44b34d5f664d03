"""Counters and last values of online updates, in one Redis hash shared by every instance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recloop.adapters.redis import Keys, RedisClient
from recloop.learning.online.results import UpdateOutcome, UpdateResult


class OnlineStats:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client

    def record(self, result: UpdateResult) -> None:
        if result.outcome is UpdateOutcome.EMPTY:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(Keys.ONLINE_STATS, "total_updates", 1)
        pipe.hincrby(Keys.ONLINE_STATS, result.outcome.value, 1)
        if result.update_ms is not None:
            pipe.hincrbyfloat(Keys.ONLINE_STATS, "update_ms_sum", result.update_ms)
            pipe.hincrby(Keys.ONLINE_STATS, "timed_updates", 1)
            served_error = result.error_after if result.mf_updated else result.error_before
            pipe.hincrbyfloat(Keys.ONLINE_STATS, "prediction_error_sum", served_error or 0.0)
        pipe.hset(
            Keys.ONLINE_STATS,
            mapping={
                "last_update_at": datetime.now(UTC).isoformat(timespec="seconds"),
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
        }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
