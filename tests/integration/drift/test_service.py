"""The drift check end to end over moto S3 and a real Redis: the champion's reference (or its parent's) against the
window of its traffic, the report stored, a new window started for the streams that were tested."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.drift.detector import DriftDetector
from recloop.drift.features import MONITORED_FEATURES, Source
from recloop.drift.model import FeatureVerdict
from recloop.drift.reference import (
    REFERENCE_FILE,
    ReferenceNotFoundError,
    ReferenceStore,
    build_reference,
    with_reference,
)
from recloop.drift.reports import DriftReports
from recloop.drift.service import DriftService, NoChampionError
from recloop.drift.window import DriftWindow
from recloop.models.bundle import CorruptModelError, ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import TEST_BUCKET
from tests.support.registry import fake_popularity_loader, make_bundle

SERVED = MONITORED_FEATURES.columns(Source.SERVED)
MIX = ("view", "click", "like")


def served_rows(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    matrix = rng.gamma(2.0, 1.0, size=(rows, len(SERVED)))
    for flag in ("mf_known", "from_cooc", "from_mf"):
        matrix[:, SERVED.index(flag)] = rng.integers(0, 2, rows)
    matrix[:, SERVED.index("prediction_score")] += shift
    return matrix


def event_rows(rng: np.random.Generator, rows: int, mix=(0.6, 0.3, 0.1)) -> list[tuple[str, str]]:
    return [(kind, "drama") for kind in rng.choice(MIX, size=rows, p=mix)]


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=0)


@pytest.fixture
def window(redis_client: redis.Redis) -> DriftWindow:
    return DriftWindow(redis_client, rng=random.Random(1))


@pytest.fixture
def service(registry: ModelRegistry, window: DriftWindow) -> DriftService:
    return DriftService(
        registry, ReferenceStore(registry.objects), window, DriftReports(registry.objects), DriftDetector()
    )


def register_trained(registry: ModelRegistry, version: str = "v1") -> None:
    rng = np.random.default_rng(0)
    reference = build_reference(version, served_rows(rng, 6000), event_rows(rng, 6000))
    registry.register(with_reference(make_bundle(version), reference))


def test_a_check_compares_the_champions_traffic_stores_the_report_and_starts_a_new_window(
    service: DriftService, registry: ModelRegistry, window: DriftWindow
) -> None:
    register_trained(registry, "v1")
    registry.register(make_bundle("v1-online-1", parent_version="v1"))  # an online update: no reference of its own
    registry.promote("v1-online-1")
    rng = np.random.default_rng(1)
    window.observe_served("v1-online-1", served_rows(rng, 1500, shift=1.0))
    window.observe_events(event_rows(rng, 50))  # too few events to test: that stream keeps filling

    report = service.check(now=datetime(2026, 12, 1, 12, tzinfo=UTC))

    assert (report.model_version, report.reference_version) == ("v1-online-1", "v1")
    assert report.drifted and report.drifted_features == ["prediction_score"]
    assert {row.feature for row in report.features if row.verdict is FeatureVerdict.INSUFFICIENT_DATA} == {
        "event_type",
        "item_category",
    }
    assert service.latest() == report and service.history(5) == [report]
    after = window.sample("v1-online-1")
    assert after.rows == {Source.SERVED: 0, Source.EVENTS: 50}


def test_no_drift_in_traffic_like_the_reference(service: DriftService, registry: ModelRegistry, window) -> None:
    register_trained(registry, "v1")
    registry.promote("v1")
    rng = np.random.default_rng(2)
    window.observe_served("v1", served_rows(rng, 1000))
    window.observe_events(event_rows(rng, 1000))

    report = service.check()

    assert not report.drifted and 0 < report.drift_score < 0.07
    assert all(row.verdict is FeatureVerdict.STABLE for row in report.features)
    assert window.sample("v1").rows == {Source.SERVED: 0, Source.EVENTS: 0}


def test_without_a_champion_or_a_reference_there_is_nothing_to_check(
    service: DriftService, registry: ModelRegistry
) -> None:
    with pytest.raises(NoChampionError):
        service.check()
    registry.register(make_bundle("v0"))
    registry.promote("v0")
    with pytest.raises(ReferenceNotFoundError):
        service.check()
    assert service.history() == []


def test_a_reference_that_fails_its_checksum_is_refused(registry: ModelRegistry, aws: dict[str, Any]) -> None:
    register_trained(registry, "v1")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key=f"models/v1/{REFERENCE_FILE}", Body=b"tampered")
    with pytest.raises(CorruptModelError):
        ReferenceStore(registry.objects).for_version("v1")
