"""Hot counters of a running experiment, per variant, in Redis: impressions (one served list each) with their
latency, and attributed outcomes (conversions and negatives), each counted once whatever the redeliveries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from recloop.adapters.redis import Keys, RedisClient, queue_script
from recloop.core.latency_histogram import bucket_of, percentile_from_histogram

# An outcome's claim outlives every redelivery that could still credit it: the default attribution window (1 day)
# plus the default de-duplication window (48 hours).
DEFAULT_CLAIM_TTL_SECONDS = 86_400 + 48 * 3600

# Claim each outcome id and count the claimed ones, in one step: a crash cannot leave a claim without its count.
# KEYS[1]: the arm's hash; KEYS[2..]: the outcomes' claims. ARGV[1]: the claims' TTL; ARGV[i]: the field KEYS[i]
# increments (conversions or negatives).
CLAIM_AND_COUNT = """
local counted = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
    counted = counted + 1
  end
end
return counted
"""


class ArmCounts(BaseModel):
    impressions: int = 0
    conversions: int = 0
    negatives: int = 0
    latency_ms_sum: float = 0.0
    latency_p95_ms: float | None = None  # None: no impression yet


class ExperimentCounters:
    """Variants are named by `Variant.name`. Every key of one experiment shares one Redis Cluster slot."""

    def __init__(self, redis_client: RedisClient, claim_ttl_seconds: int = DEFAULT_CLAIM_TTL_SECONDS) -> None:
        self.redis = redis_client
        self.claim_ttl_seconds = claim_ttl_seconds
        self._claim_and_count = redis_client.register_script(CLAIM_AND_COUNT)

    def record_impression(self, experiment_id: str, variant: str, latency_ms: float) -> None:
        self.record_impressions(experiment_id, variant, [latency_ms])

    def record_impressions(self, experiment_id: str, variant: str, latencies_ms: Sequence[float]) -> None:
        """Several impressions of one variant in one round trip (one latency each)."""
        self.record_batch(experiment_id, {variant: latencies_ms}, {})

    def record_outcome(self, experiment_id: str, variant: str, outcome_id: str, positive: bool) -> bool:
        """Counts a conversion (positive) or a negative once per `outcome_id`; False for a repeat."""
        return self.record_outcomes(experiment_id, variant, [(outcome_id, positive)]) == 1

    def record_outcomes(self, experiment_id: str, variant: str, outcomes: Sequence[tuple[str, bool]]) -> int:
        """Several (outcome_id, positive) of one variant in one round trip; returns how many were new."""
        return self.record_batch(experiment_id, {}, {variant: outcomes})

    def record_batch(
        self,
        experiment_id: str,
        latencies_ms: Mapping[str, Sequence[float]],
        outcomes: Mapping[str, Sequence[tuple[str, bool]]],
    ) -> int:
        """Impressions (latencies by variant) and outcomes ((outcome_id, positive) by variant) of a batch of requests
        or events, in one round trip; returns how many outcomes were new."""
        pipe = self.redis.pipeline(transaction=False)
        for variant, latencies in latencies_ms.items():
            if latencies:
                self._queue_impressions(pipe, experiment_id, variant, latencies)
        claims = 0
        for variant, variant_outcomes in outcomes.items():
            if variant_outcomes:
                self._queue_outcomes(pipe, experiment_id, variant, variant_outcomes)
                claims += 1
        if not len(pipe):
            return 0
        replies = pipe.execute()
        return sum(int(reply) for reply in replies[len(replies) - claims :]) if claims else 0

    def queue_impression(self, pipe: Any, experiment_id: str, variant: str, latency_ms: float) -> None:
        """Queue one impression on the caller's pipeline (the recommendation log's: no round trip of its own)."""
        self._queue_impressions(pipe, experiment_id, variant, [latency_ms])

    @staticmethod
    def _queue_impressions(pipe: Any, experiment_id: str, variant: str, latencies: Sequence[float]) -> None:
        arm, latency = Keys.experiment_arm(experiment_id, variant), Keys.experiment_latency(experiment_id, variant)
        pipe.hincrby(arm, "impressions", len(latencies))
        pipe.hincrbyfloat(arm, "latency_ms_sum", float(sum(latencies)))
        for bucket, count in Counter(bucket_of(value) for value in latencies).items():
            pipe.hincrby(latency, str(bucket), count)

    def _queue_outcomes(
        self, pipe: Any, experiment_id: str, variant: str, outcomes: Sequence[tuple[str, bool]]
    ) -> None:
        keys = [Keys.experiment_arm(experiment_id, variant)]
        fields: list[str | int] = [self.claim_ttl_seconds]
        for outcome_id, positive in outcomes:
            keys.append(Keys.experiment_outcome(experiment_id, outcome_id))
            fields.append("conversions" if positive else "negatives")
        queue_script(pipe, self._claim_and_count, keys, fields)

    def counts(self, experiment_id: str, variants: list[str]) -> dict[str, ArmCounts]:
        pipe = self.redis.pipeline(transaction=False)
        for variant in variants:
            pipe.hgetall(Keys.experiment_arm(experiment_id, variant))
            pipe.hgetall(Keys.experiment_latency(experiment_id, variant))
        replies = iter(pipe.execute())
        result: dict[str, ArmCounts] = {}
        for variant in variants:
            arm, histogram = next(replies), {int(bucket): int(count) for bucket, count in next(replies).items()}
            result[variant] = ArmCounts(
                impressions=int(arm.get("impressions", 0)),
                conversions=int(arm.get("conversions", 0)),
                negatives=int(arm.get("negatives", 0)),
                latency_ms_sum=float(arm.get("latency_ms_sum", 0.0)),
                latency_p95_ms=percentile_from_histogram(histogram, 0.95) if histogram else None,
            )
        return result

    def reset(self, experiment_id: str) -> None:
        """Deletes every counter and outcome claim of the experiment."""
        keys = list(self.redis.scan_iter(match=Keys.experiment_pattern(experiment_id), count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
