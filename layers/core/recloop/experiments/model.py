"""What an experiment is: variants (registry versions) that compete for a share of users, under one allocation
strategy, with a lifecycle and, once decided, a decision. The definition is durable in S3; its counters live in
Redis (recloop.experiments.counters)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from recloop.core.settings import AllocationStrategy

EXPERIMENT_ID_PATTERN = r"^exp_[0-9a-f]{12}$"


def new_experiment_id() -> str:
    return "exp_" + secrets.token_hex(6)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ExperimentStatus(StrEnum):
    DRAFT = "draft"  # created, serving nothing yet
    RUNNING = "running"  # assigning users and counting outcomes
    ROLLING_OUT = "rolling_out"  # decided; the winner ramps through the rollout's stages before it becomes champion
    STOPPED = "stopped"  # stopped by an operator, no decision acted on; final results kept
    CONCLUDED = "concluded"  # a decision was reached (and acted on, with auto_promote)


class Variant(BaseModel):
    variant_id: str  # var_0, var_1, ... in the order given
    name: str
    model_version: str
    weight: float | None = None  # fixed_split's share among variants; None: equal shares


def split_weights(variants: list[Variant]) -> list[float]:
    """fixed_split's expected share of each variant."""
    if all(variant.weight is None for variant in variants):
        return [1 / len(variants)] * len(variants)
    total = sum(variant.weight or 0.0 for variant in variants)
    return [(variant.weight or 0.0) / total for variant in variants]


class Guardrails(BaseModel):
    # A challenger whose p95 latency exceeds control's by this factor is never declared winner.
    max_latency_ratio: float = 1.5
    # No decision before every arm has this many conversions.
    min_conversions_per_arm: int = 100
    # A rollout stage passes once the winner has served this many lists in it with every guardrail holding.
    rollout_stage_impressions: int = 2000


SERVING_STATUSES = frozenset({ExperimentStatus.RUNNING, ExperimentStatus.ROLLING_OUT})


class Decision(BaseModel):
    winning_variant: str | None  # a variant name; None: stopped without a winner
    reason: str
    decided_at: str = Field(default_factory=now_iso)
    impressions: int = 0
    promoted_version: str | None = None  # set when auto-promotion made the winner champion
    # Auto-promotion is recorded before it is attempted, so a crash between the two is finished by the next read:
    # the champion it expects to replace, and whether the attempt is still to be made.
    champion_at_decision: str | None = None
    promotion_pending: bool = False


class RolloutStage(BaseModel):
    """One stage of a rollout: the winner serves `share` percent of all users, the champion the rest."""

    share: float
    started_at: str = Field(default_factory=now_iso)
    ended_at: str | None = None
    outcome: str | None = None  # why the stage ended: its guardrails held, or which one did not


class Rollout(BaseModel):
    """The winner's staged ramp to all users against the champion it replaces ("incremental rollout"). Each stage
    is checked by its own guardrails, on its own counters, before the next; the last stage (100%) is the
    promotion."""

    winning_variant: str
    model_version: str
    baseline_version: str  # the champion when the rollout began
    stages: list[float]  # percent of all users, increasing, the last 100
    history: list[RolloutStage]  # the stages reached so far; the last is the current one

    @property
    def current(self) -> RolloutStage:
        return self.history[-1]

    @property
    def next_share(self) -> float:
        return self.stages[len(self.history)]

    def arm_names(self) -> tuple[str, str]:
        """The counter names of the winner's and the champion's arm in the current stage (each stage counts apart,
        so its guardrails judge only its own traffic)."""
        share = f"{self.current.share:g}%"
        return f"rollout:{self.winning_variant}@{share}", f"baseline:{self.baseline_version}@{share}"


class Experiment(BaseModel):
    experiment_id: str
    name: str
    description: str = ""
    variants: list[Variant]
    allocation_strategy: AllocationStrategy
    traffic_percentage: float  # share of all users who enter the experiment (0-100); the rest get the champion
    epsilon: float = 0.1  # epsilon_greedy's exploration share
    auto_promote: bool = False
    guardrails: Guardrails = Field(default_factory=Guardrails)
    # Users are assigned by hash(salt, user_id): the same user gets the same answer for the whole experiment.
    salt: str = Field(default_factory=lambda: secrets.token_hex(8))
    status: ExperimentStatus = ExperimentStatus.DRAFT
    created_at: str = Field(default_factory=now_iso)
    started_at: str | None = None
    stopped_at: str | None = None
    decision: Decision | None = None
    rollout_stages: list[float] | None = None  # with auto_promote: ramp the winner through these shares first
    rollout: Rollout | None = None  # set while, and after, the winner ramps
    # The results as they stood when the experiment stopped or concluded (recloop.experiments.service's
    # ExperimentResults): durable with the definition, whatever becomes of the Redis counters.
    final_results: dict[str, Any] | None = None

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    @property
    def control(self) -> Variant:
        """The first variant: the one the others are compared with (the guide names it "champion")."""
        return self.variants[0]

    def serving(self) -> Experiment:
        """What assigns users now: the experiment itself, or during a rollout a sticky split of all users between
        the winner (the current stage's share) and the champion, each counted under the stage's arm names."""
        if self.status is not ExperimentStatus.ROLLING_OUT or self.rollout is None:
            return self
        rollout = self.rollout
        winner_arm, baseline_arm = rollout.arm_names()
        share = rollout.current.share / 100
        variants = [
            Variant(variant_id="rollout", name=winner_arm, model_version=rollout.model_version, weight=share),
            Variant(variant_id="baseline", name=baseline_arm, model_version=rollout.baseline_version, weight=1 - share),
        ]
        # The winner's slice starts at 0 and only grows: a user who got the winner keeps it at every later stage.
        update = {
            "variants": variants,
            "allocation_strategy": AllocationStrategy.FIXED_SPLIT,
            "traffic_percentage": 100.0,
            "salt": f"{self.salt}:rollout",
        }
        return self.model_copy(update=update)
