"""The retrain status in Redis, shared by the API, the stream consumer and the retrain state machine's tasks.

- the lock (Keys.RETRAIN_LOCK): the execution name of the retrain in progress, with a TTL, so a lock left by an
  execution that died expires and the next retrain may start;
- the status hash (Keys.RETRAIN_STATUS): the metrics, last_retrain_time, last_drift_score, counting_since, the last
  run (JSON) and the new-interaction count when it started;
- the new-interaction count (Keys.RETRAIN_NEW_INTERACTIONS): events applied for the first time since the last
  successful retrain, INCRBY by the stream consumer once per batch;
- the finished runs (Keys.RETRAIN_RUNS), newest first, the last RECENT_RUNS of them.

The keys share one hash tag, so a run begins in one script (lock and run together) and its end is recorded in
one transaction before its lock is released.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from recloop.adapters.redis import DELETE_IF_EQUAL, Keys, RedisClient
from recloop.retraining.model import (
    TRIGGER_METRICS,
    RetrainMetrics,
    RetrainRun,
    RetrainStatus,
    RetrainTrigger,
    RunOutcome,
)

LAST_RUN = "last_run"
LAST_RETRAIN_TIME = "last_retrain_time"
LAST_DRIFT_SCORE = "last_drift_score"
COUNTING_SINCE = "counting_since"
# The new-interaction count when the last run began: a success subtracts it, so what arrived during the run still
# counts towards the next one.
INTERACTIONS_AT_START = "interactions_at_start"
# Finished runs the status lists (Keys.RETRAIN_RUNS).
RECENT_RUNS = 20

# Take the lock if free and record the run in the same step: nobody sees a lock without its run.
_BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[2], 'last_run', ARGV[3], 'interactions_at_start', redis.call('GET', KEYS[3]) or '0')
return 1
"""


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class RetrainStatusStore:
    def __init__(self, redis_client: RedisClient, lock_seconds: int) -> None:
        self.redis = redis_client
        self.lock_seconds = lock_seconds
        self._begin = redis_client.register_script(_BEGIN)
        self._delete_if_equal = redis_client.register_script(DELETE_IF_EQUAL)

    def read(self) -> RetrainStatus:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(Keys.RETRAIN_LOCK)
        pipe.hgetall(Keys.RETRAIN_STATUS)
        pipe.get(Keys.RETRAIN_NEW_INTERACTIONS)
        pipe.lrange(Keys.RETRAIN_RUNS, 0, -1)
        owner, fields, new_interactions, runs = pipe.execute()
        fields = {_text(k): _text(v) for k, v in fields.items()}
        metrics = {name: int(fields.get(name, 0)) for name in RetrainMetrics.model_fields}
        return RetrainStatus(
            retraining_in_progress=owner is not None,
            running_execution=_text(owner) if owner is not None else None,
            last_retrain_time=fields.get(LAST_RETRAIN_TIME) or None,
            # Never negative: a Redis that lost the counter but kept the status would subtract past zero.
            new_interactions_since_retrain=max(0, int(new_interactions or 0)),
            last_drift_score=float(fields[LAST_DRIFT_SCORE]) if fields.get(LAST_DRIFT_SCORE) else None,
            counting_since=fields.get(COUNTING_SINCE) or None,
            metrics=RetrainMetrics(**metrics),
            last_run=RetrainRun.model_validate_json(fields[LAST_RUN]) if fields.get(LAST_RUN) else None,
            recent_runs=[RetrainRun.model_validate_json(run) for run in runs],
        )

    def add_new_interactions(self, count: int) -> None:
        if count > 0:
            self.redis.incrby(Keys.RETRAIN_NEW_INTERACTIONS, count)

    def record_drift_score(self, score: float) -> None:
        self.redis.hset(Keys.RETRAIN_STATUS, LAST_DRIFT_SCORE, repr(score))

    def start_counting(self, now: datetime) -> None:
        """The schedule's start while no retrain has succeeded: the first evaluation, kept from then on."""
        self.redis.hsetnx(Keys.RETRAIN_STATUS, COUNTING_SINCE, iso(now))

    def begin(self, run: RetrainRun) -> bool:
        """Take the lock for `run` and record it as the last run; False if another retrain holds the lock."""
        keys = [Keys.RETRAIN_LOCK, Keys.RETRAIN_STATUS, Keys.RETRAIN_NEW_INTERACTIONS]
        return bool(self._begin(keys=keys, args=[run.execution_name, self.lock_seconds, run.model_dump_json()]))

    def count_started(self, trigger: RetrainTrigger) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(Keys.RETRAIN_STATUS, "total_retrains", 1)
        pipe.hincrby(Keys.RETRAIN_STATUS, TRIGGER_METRICS[trigger], 1)
        pipe.execute()

    def holds_lock(self, execution_name: str) -> bool:
        return _text(self.redis.get(Keys.RETRAIN_LOCK) or "") == execution_name

    def update_running(self, run: RetrainRun) -> None:
        """Record what changed about the running run (its ARN) and give its lock a full TTL again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(Keys.RETRAIN_STATUS, LAST_RUN, run.model_dump_json())
        pipe.expire(Keys.RETRAIN_LOCK, self.lock_seconds)
        pipe.execute()

    def end(self, run: RetrainRun) -> None:
        """Record the finished `run` (it must be the last run), update the counters, and release its lock."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(Keys.RETRAIN_STATUS, LAST_RUN, run.model_dump_json())
        pipe.lpush(Keys.RETRAIN_RUNS, run.model_dump_json())
        pipe.ltrim(Keys.RETRAIN_RUNS, 0, RECENT_RUNS - 1)
        if run.outcome is RunOutcome.SUCCEEDED:
            started_with = int(self.redis.hget(Keys.RETRAIN_STATUS, INTERACTIONS_AT_START) or 0)
            pipe.decrby(Keys.RETRAIN_NEW_INTERACTIONS, started_with)
            pipe.hset(Keys.RETRAIN_STATUS, mapping={LAST_RETRAIN_TIME: run.finished_at or "", INTERACTIONS_AT_START: 0})
        elif run.outcome is RunOutcome.FAILED:
            pipe.hincrby(Keys.RETRAIN_STATUS, "failed_retrains", 1)
        pipe.execute()
        self.release(run.execution_name)  # after the status: no new run starts before this one is recorded

    def release(self, execution_name: str) -> None:
        """Give up the lock if `execution_name` still holds it."""
        self._delete_if_equal(keys=[Keys.RETRAIN_LOCK], args=[execution_name])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
