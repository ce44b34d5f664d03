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


class Decision(BaseModel):
    winning_variant: str | None  # a variant name; None: stopped without a winner
    reason: str
    decided_at: str = Field(default_factory=now_iso)
    impressions: int = 0
    promoted_version: str | None = None  # set when auto-promotion made the winner champion


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
