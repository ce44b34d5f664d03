"""Which holdout judges a retrain's candidate against the champion (recloop.retraining.workflow.plan_holdout): one
that some version in the champion's lineage had not learned from, so neither side is judged on answers it was taught."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.learning.datasets import time_split
from recloop.models.bundle import DataWindow, ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.model_registry import ModelRegistry
from recloop.retraining.workflow import HOLDOUT_FRACTION, MIN_HOLDOUT_EVENTS, champion_baseline, plan_holdout
from tests.support.environment import TEST_BUCKET
from tests.support.learning import event
from tests.support.registry import fake_popularity_loader, make_bundle

EVENTS = [event(f"u{n % 50}", f"i{n % 70}", float(n)) for n in range(3000)]  # one a second, t = 0 .. 2999
TEN_PERCENT_START = 2700.0


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)


def serve(registry: ModelRegistry, lineage: list[tuple[str, float]]) -> None:
    """Register a lineage, oldest first (each version the child of the one before), and promote the newest."""
    parent = None
    for version, end in lineage:
        registry.register(make_bundle(version, parent_version=parent, data_window=DataWindow(start=0.0, end=end)))
        parent = version
    registry.promote(parent or "", "serving")


def test_without_a_champion_the_holdout_is_the_latest_tenth(registry: ModelRegistry) -> None:
    plan = plan_holdout(registry, EVENTS)
    assert (plan.holdout_fraction, plan.holdout_start) == (HOLDOUT_FRACTION, TEN_PERCENT_START)


def test_a_champion_updated_online_is_judged_as_its_ancestor_before_the_latest_tenth(registry: ModelRegistry) -> None:
    serve(registry, [("pop-trained", 2000.0), ("pop-online-1", 2500.0), ("pop-online-2", 2999.0)])
    plan = plan_holdout(registry, EVENTS)
    assert (plan.holdout_fraction, plan.holdout_start) == (HOLDOUT_FRACTION, TEN_PERCENT_START)
    assert champion_baseline(registry, plan.holdout_start) == ("pop-online-2", "pop-online-1")


def test_soon_after_training_the_holdout_is_what_came_after_the_oldest_version(registry: ModelRegistry) -> None:
    """Trained through t=2799, updated online since: every version learned part of the latest tenth."""
    serve(registry, [("pop-trained", 2799.0), ("pop-online-1", 2999.0)])
    plan = plan_holdout(registry, EVENTS)
    train, holdout = time_split(EVENTS, plan.holdout_fraction)
    assert [e.timestamp for e in holdout] == [float(t) for t in range(2800, 3000)]
    assert len(train) == 2800 and plan.holdout_start == 2800.0
    assert champion_baseline(registry, plan.holdout_start) == ("pop-online-1", "pop-trained")


def test_with_too_few_unseen_events_the_champion_of_the_moment_is_the_bar(registry: ModelRegistry) -> None:
    serve(registry, [("pop-trained", 2999.0 - MIN_HOLDOUT_EVENTS + 1)])
    plan = plan_holdout(registry, EVENTS)
    assert (plan.holdout_fraction, plan.holdout_start) == (HOLDOUT_FRACTION, TEN_PERCENT_START)
    assert champion_baseline(registry, plan.holdout_start) == ("pop-trained", "pop-trained")
