"""Attribution on the event path: an event about a recommended item is credited to the experiment impression that
showed it, once.

A click, like or purchase is a conversion, a dislike a negative outcome (views count for nothing). The impression
credited is the one the event names (`recommendation_id`), else the user's latest experiment impression that held
the item, within the attribution window. Counting claims the event id (ExperimentCounters.record_outcomes), so
client retries and stream redeliveries count once. With no experiment running nothing is read; otherwise one Redis
round trip finds the impressions of a whole batch, and one per credited arm counts them. Attribution never fails an
event: its errors are logged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.events import CONVERSION_EVENTS, EventType, Interaction
from recloop.experiments.counters import ExperimentCounters
from recloop.experiments.router import RunningExperiments
from recloop.serving.recommender import ExperimentImpression

logger = Logger(child=True)

# Event types that are an outcome of a recommendation, and whether each is a positive one.
OUTCOME_EVENTS: dict[EventType, bool] = {**dict.fromkeys(CONVERSION_EVENTS, True), EventType.DISLIKE: False}
# An event may carry a timestamp slightly before the impression it follows (client and server clocks differ).
CLOCK_SKEW_SECONDS = 300.0


@dataclass(frozen=True)
class Credit:
    """An event credited to an arm (counted if its event id had not been counted before)."""

    event_id: str
    recommendation_id: str
    experiment_id: str
    variant: str
    positive: bool


class Attribution:
    def __init__(
        self,
        redis_client: RedisClient,
        running: RunningExperiments,
        counters: ExperimentCounters,
        window_seconds: float,
    ) -> None:
        self.redis = redis_client
        self.running = running
        self.counters = counters
        self.window_seconds = window_seconds

    def attribute(self, events: Sequence[Interaction]) -> list[Credit]:
        """Credit the events that are outcomes of running experiments' impressions; what was credited."""
        outcomes = [event for event in events if event.event_type in OUTCOME_EVENTS]
        if not outcomes:
            return []
        try:
            running = {experiment.experiment_id for experiment in self.running()}
            if not running:
                return []
            credits = [
                credit
                for event, found in zip(outcomes, self._impressions(outcomes), strict=True)
                if (credit := self._credit(event, found, running)) is not None
            ]
            self._count(credits)
        except Exception as exc:  # the event is accepted whatever happens here
            logger.warning("events not attributed", extra={"events": len(outcomes), "error": repr(exc)})
            return []
        return credits

    def _impressions(self, events: Sequence[Interaction]) -> list[Any]:
        """Per event, in one round trip: the recommendation it names (its log), else the user's recent experiment
        impressions."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            if event.recommendation_id:
                pipe.hgetall(Keys.recommendation_log(event.user_id, event.recommendation_id))
            else:
                pipe.lrange(Keys.user_experiment_impressions(event.user_id), 0, -1)
        return pipe.execute()

    def _credit(self, event: Interaction, found: Any, running: set[str]) -> Credit | None:
        if event.recommendation_id:
            # The named recommendation only: if it did not show the item (or expired), nothing is credited.
            if not found or not found.get("experiment_id"):
                return None
            impression: ExperimentImpression | None = ExperimentImpression(
                event.recommendation_id,
                found["experiment_id"],
                found.get("variant", ""),
                float(found["ts"]),
                tuple(found.get("items", "").split("|")),
            )
            if not self._shows(impression, event):
                return None
        else:
            newest_first = (ExperimentImpression.decode(raw) for raw in found)
            impression = next((i for i in newest_first if self._shows(i, event)), None)
        if impression is None or impression.experiment_id not in running:
            return None
        return Credit(
            event.event_id,
            impression.recommendation_id,
            impression.experiment_id,
            impression.variant,
            OUTCOME_EVENTS[event.event_type],
        )

    def _shows(self, impression: ExperimentImpression, event: Interaction) -> bool:
        """The impression held the event's item, and the event came within the window after it."""
        elapsed = event.timestamp - impression.ts
        return event.item_id in impression.items and -CLOCK_SKEW_SECONDS <= elapsed <= self.window_seconds

    def _count(self, credits: list[Credit]) -> int:
        by_arm: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)
        for credit in credits:
            by_arm[credit.experiment_id, credit.variant].append((credit.event_id, credit.positive))
        return sum(
            self.counters.record_outcomes(experiment_id, variant, outcomes)
            for (experiment_id, variant), outcomes in by_arm.items()
        )
