"""The champion's live quality against its baseline: what the performance trigger reads.

A `PerformanceSignal` gives one reading: the current value of a quality metric, its baseline and how many
observations the baseline rests on. The signal measured today is online learning's held-out error: before each
online update, the champion is scored on the newest buffered events it has not learned from (lower is better), and
the baseline is the mean held-out error of the models in service after each update (recloop.learning.online.stats).
A hit rate or an attributed conversion rate of the champion would plug in as another signal.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

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
    def reading(self) -> PerformanceReading | None:
        """The latest reading; None while there is nothing to compare."""
        ...


class OnlineHeldOutError:
    """Online learning's held-out error as the performance signal."""

    METRIC = "online_held_out_error"

    def __init__(self, stats: OnlineStats) -> None:
        self.stats = stats

    def reading(self) -> PerformanceReading | None:
        held_out = self.stats.held_out_error()
        if held_out is None:
            return None
        current, baseline, samples = held_out
        return PerformanceReading(
            metric=self.METRIC, current=current, baseline=baseline, samples=samples, higher_is_better=False
        )
