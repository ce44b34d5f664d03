"""The champion's live quality against its baseline: what the performance trigger reads.

A `PerformanceSignal` gives one reading: the current value of a quality metric, its baseline and how many
observations the baseline rests on. Two signals, the first with a reading wins (`FirstReading`):

- `LiveHitRate`, the champion's live hit rate: each online update judges the positive events of its buffer against
  the user's latest logged recommendation within the attribution window (hit: the item was in its top 10; the
  served-feature log, written when a ranker serves). The current value is the newest updates' rate over at least
  PERFORMANCE_MIN_POSITIVES judged events, the baseline the rate of the updates before them since the last retrain.
  This is the replay's HR@10, measured on live traffic.
- `OnlineHeldOutError`, where no ranker serves (an `mf` champion logs no served features): before each online update
  the champion is scored on the newest buffered events it has not learned from (lower is better); the baseline is
  the mean held-out error of the models in service after each update (recloop.learning.online.stats).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

from recloop.learning.online.results import UpdatePoint
from recloop.learning.online.stats import OnlineStats


class PerformanceReading(BaseModel):
    metric: str
    current: float
    baseline: float
    samples: int = Field(description="observations behind the baseline")
    higher_is_better: bool

    def relative_drop(self) -> float:
        """How much worse the current value is than the baseline, as a share of the baseline (0 if not worse)."""
        if self.baseline <= 0:
            return 0.0
        worse_by = self.baseline - self.current if self.higher_is_better else self.current - self.baseline
        # Rounded so that a drop of exactly the threshold meets it (0.6 vs 0.5 is 0.19999999999999996 in floats).
        return max(0.0, round(worse_by / self.baseline, 9))

    def describe(self) -> str:
        return f"{self.metric} {self.current:.4f} vs baseline {self.baseline:.4f}, {self.relative_drop():.0%} worse"


class PerformanceSignal(Protocol):
    def reading(self, since: datetime | None = None) -> PerformanceReading | None:
        """The latest reading of the traffic after `since` (the last retrain); None while there is nothing to
        compare."""
        ...


class LiveHitRate:
    """The champion's live hit rate at 10 against its trailing baseline (higher is better)."""

    METRIC = "live_hit_rate_at_10"

    def __init__(self, stats: OnlineStats, min_positives: int) -> None:
        self.stats = stats
        self.min_positives = min_positives

    def reading(self, since: datetime | None = None) -> PerformanceReading | None:
        history = self.stats.hit_history(since.timestamp() if since is not None else None)
        judged = 0
        newest = 0
        while newest < len(history) and judged < self.min_positives:
            judged += history[newest].served_judged
            newest += 1
        current, baseline = history[:newest], history[newest:]
        if judged < self.min_positives or sum(r.served_judged for r in baseline) < self.min_positives:
            return None
        return PerformanceReading(
            metric=self.METRIC,
            current=_rate(current),
            baseline=_rate(baseline),
            samples=len(baseline),
            higher_is_better=True,
        )


def _rate(points: Sequence[UpdatePoint]) -> float:
    return sum(p.served_hits for p in points) / sum(p.served_judged for p in points)


class FirstReading:
    """The first of several signals that has a reading."""

    def __init__(self, *signals: PerformanceSignal) -> None:
        self.signals = signals

    def reading(self, since: datetime | None = None) -> PerformanceReading | None:
        return next((r for signal in self.signals if (r := signal.reading(since)) is not None), None)


class OnlineHeldOutError:
    """Online learning's held-out error as the performance signal."""

    METRIC = "online_held_out_error"

    def __init__(self, stats: OnlineStats) -> None:
        self.stats = stats

    def reading(self, since: datetime | None = None) -> PerformanceReading | None:
        held_out = self.stats.held_out_error()
        if held_out is None:
            return None
        current, baseline, samples = held_out
        return PerformanceReading(
            metric=self.METRIC, current=current, baseline=baseline, samples=samples, higher_is_better=False
        )
