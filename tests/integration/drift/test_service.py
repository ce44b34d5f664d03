"""The drift check end to end over moto S3 and a real Redis: the served stream is compared with its lineage's
baseline (the first full window of its own traffic, taken once), the events stream with the training reference;
the report is stored and a new window started for the streams tested or taken."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.drift.baselines import ServedBaselines, baseline_key
from recloop.drift.detector import DriftDetector
from recloop.drift.features import MONITORED_FEATURES, Source
from recloop.drift.lineage import LineageObserver
from recloop.drift.model import DriftReport, FeatureVerdict
from recloop.drift.reference import (
    MAX_REFERENCE_ROWS,
    REFERENCE_FILE,
    ReferenceNotFoundError,
    ReferenceSample,
    ReferenceStore,
    build_reference,
    with_reference,
)
from recloop.drift.reports import DriftReports
from recloop.drift.service import DriftService, NoChampionError
from recloop.drift.window import RESERVOIR_CAPACITY, DriftWindow, WindowSample
from recloop.models.bundle import CorruptModelError, ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import TEST_BUCKET
from tests.support.registry import fake_popularity_loader, make_bundle

SERVED = MONITORED_FEATURES.columns(Source.SERVED)
MIX = ("view", "click", "like")
CAPACITY = RESERVOIR_CAPACITY  # the window's reservoir, and so the rows a baseline needs
UNTESTED = {feature.name for feature in MONITORED_FEATURES if not feature.tested}
SERVED_TESTED = {feature.name for feature in MONITORED_FEATURES.of(Source.SERVED) if feature.tested}


def served_rows(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    matrix = rng.gamma(2.0, 1.0, size=(rows, len(SERVED)))
    for flag in ("mf_known", "from_cooc", "from_mf"):
        matrix[:, SERVED.index(flag)] = rng.integers(0, 2, rows)
    matrix[:, SERVED.index("prediction_score")] += shift
    return matrix


def training_rows(rng: np.random.Generator, rows: int) -> np.ndarray:
    """What a ranker's training queries look like next to served traffic: users part-way through their
    histories, items young at the time (the served features far from what serving will see)."""
    matrix = served_rows(rng, rows)
    for skewed in ("user_events_log", "category_affinity", "prediction_score", "item_age_days"):
        matrix[:, SERVED.index(skewed)] *= 0.4
    return matrix


def event_rows(rng: np.random.Generator, rows: int, mix=(0.6, 0.3, 0.1)) -> list[tuple[str, str]]:
    return [(kind, "drama") for kind in rng.choice(MIX, size=rows, p=mix)]


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=0)


@pytest.fixture
def window(redis_client: redis.Redis) -> DriftWindow:
    return DriftWindow(redis_client, capacity=CAPACITY, rng=random.Random(1))


def make_service(registry: ModelRegistry, window: DriftWindow, baselines: ServedBaselines | None = None):
    objects = registry.objects
    return DriftService(
        registry,
        ReferenceStore(objects),
        baselines or ServedBaselines(objects),
        window,
        DriftReports(objects),
        detector=DriftDetector(),
    )


@pytest.fixture
def service(registry: ModelRegistry, window: DriftWindow) -> DriftService:
    return make_service(registry, window)


def register_trained(registry: ModelRegistry, version: str = "v1") -> None:
    rng = np.random.default_rng(0)
    reference = build_reference(version, training_rows(rng, 6000), event_rows(rng, 6000))
    registry.register(with_reference(make_bundle(version), reference))


def verdicts(report: DriftReport, source: Source) -> dict[str, FeatureVerdict]:
    return {row.feature: row.verdict for row in report.features if row.source is source}


def take_baseline(service: DriftService, window: DriftWindow, lineage: str, seed: int = 1) -> DriftReport:
    rng = np.random.default_rng(seed)
    window.observe_served(lineage, served_rows(rng, CAPACITY + 200))
    window.observe_events(event_rows(rng, 1000))
    return service.check(now=datetime(2026, 12, 1, 12, tzinfo=UTC))


def test_the_first_full_window_becomes_the_served_baseline_and_the_events_are_tested(
    service: DriftService, registry: ModelRegistry, window: DriftWindow, aws: dict[str, Any]
) -> None:
    register_trained(registry, "v1")
    registry.promote("v1")

    report = take_baseline(service, window, "v1")

    assert set(verdicts(report, Source.SERVED).values()) == {FeatureVerdict.BASELINE}
    assert set(verdicts(report, Source.EVENTS).values()) == {FeatureVerdict.STABLE}
    assert not report.drifted and report.served_baseline_taken_at == "2026-12-01T12:00:00+00:00"
    stored = ReferenceSample.from_npz(aws["s3"].get_object(Bucket=TEST_BUCKET, Key=baseline_key("v1"))["Body"].read())
    assert (stored.version, stored.rows) == ("v1", {Source.SERVED: CAPACITY, Source.EVENTS: 0})
    assert set(stored.sample.numeric) | set(stored.sample.categorical) == set(SERVED)
    assert window.sample("v1").rows == {Source.SERVED: 0, Source.EVENTS: 0}  # both streams start a new window


def test_after_the_baseline_traffic_like_it_drifts_nowhere_though_the_training_rows_differ(
    service: DriftService, registry: ModelRegistry, window: DriftWindow
) -> None:
    register_trained(registry, "v1")
    registry.promote("v1")
    take_baseline(service, window, "v1")
    rng = np.random.default_rng(2)
    window.observe_served("v1", served_rows(rng, 1000))
    window.observe_events(event_rows(rng, 1000))

    report = service.check()

    assert not report.drifted, report.drifted_features
    assert verdicts(report, Source.SERVED) == {
        name: FeatureVerdict.NOT_TESTED if name in UNTESTED else FeatureVerdict.STABLE for name in SERVED
    }
    assert set(verdicts(report, Source.EVENTS).values()) == {FeatureVerdict.STABLE}
    assert report.reference_rows == {Source.SERVED: CAPACITY, Source.EVENTS: MAX_REFERENCE_ROWS}
    assert report.served_baseline_taken_at == "2026-12-01T12:00:00+00:00"  # the baseline is kept, not retaken
    assert window.sample("v1").rows == {Source.SERVED: 0, Source.EVENTS: 0}


def test_after_the_baseline_shifted_traffic_is_drift(
    service: DriftService, registry: ModelRegistry, window: DriftWindow
) -> None:
    register_trained(registry, "v1")
    registry.promote("v1")
    take_baseline(service, window, "v1")
    rng = np.random.default_rng(3)
    window.observe_served("v1", served_rows(rng, 1000, shift=1.0))
    window.observe_events(event_rows(rng, 1000, mix=(0.4, 0.3, 0.3)))

    report = service.check()

    assert report.drifted and set(report.drifted_features) == {"prediction_score", "event_type"}


def test_before_a_full_window_the_served_stream_is_not_tested_and_keeps_filling(
    service: DriftService, registry: ModelRegistry, window: DriftWindow
) -> None:
    register_trained(registry, "v1")
    registry.promote("v1")
    rng = np.random.default_rng(4)
    window.observe_served("v1", served_rows(rng, CAPACITY // 2))
    window.observe_events(event_rows(rng, 1000))

    report = service.check()

    assert {verdict for name, verdict in verdicts(report, Source.SERVED).items() if name in SERVED_TESTED} == {
        FeatureVerdict.INSUFFICIENT_DATA  # no baseline to compare with: not against the training rows either
    }
    assert report.served_baseline_taken_at is None and not report.drifted
    assert registry.objects.get(baseline_key("v1")) is None
    assert window.sample("v1").rows == {Source.SERVED: CAPACITY // 2, Source.EVENTS: 0}

    window.observe_served("v1", served_rows(rng, CAPACITY // 2))
    assert set(verdicts(service.check(), Source.SERVED).values()) == {FeatureVerdict.BASELINE}


def test_an_online_childs_traffic_fills_its_lineages_window_and_is_checked_against_its_baseline(
    service: DriftService, registry: ModelRegistry, window: DriftWindow
) -> None:
    register_trained(registry, "v1")
    registry.register(make_bundle("v1-online-1", parent_version="v1"))  # an online update: no reference of its own
    registry.register(make_bundle("v1-online-2", parent_version="v1-online-1"))
    registry.promote("v1")
    take_baseline(service, window, "v1")
    references = ReferenceStore(registry.objects)
    observer = LineageObserver(window, references)
    rng = np.random.default_rng(5)
    rows = served_rows(rng, 1000, shift=1.0)
    for version, half in (("v1-online-1", rows[:500]), ("v1-online-2", rows[500:])):
        for row in half:
            observer(None, version, np.asarray([row[:-1]]), np.asarray([row[-1]]))
    registry.promote("v1-online-2")

    assert window.sample("v1").rows[Source.SERVED] == 1000  # one window for the lineage
    assert window.sample("v1-online-2").rows[Source.SERVED] == 0

    report = service.check()

    assert (report.model_version, report.reference_version) == ("v1-online-2", "v1")
    assert report.drifted_features == ["prediction_score"]


class CountingObjects(ObjectStore):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads = 0

    def get(self, key: str) -> tuple[bytes, str] | None:
        self.reads += 1
        return super().get(key)


def test_a_served_versions_lineage_is_read_once_then_remembered(
    registry: ModelRegistry, window: DriftWindow, aws: dict[str, Any]
) -> None:
    register_trained(registry, "v1")
    registry.register(make_bundle("v1-online-1", parent_version="v1"))
    registry.register(make_bundle("v1-online-2", parent_version="v1-online-1"))
    registry.register(make_bundle("v0"))  # no reference anywhere in its lineage
    objects = CountingObjects(aws["s3"], TEST_BUCKET)
    observer = LineageObserver(window, ReferenceStore(objects))

    assert observer.lineage("v1-online-1") == "v1" and objects.reads == 2  # its metadata, then its parent's
    assert observer.lineage("v1-online-2") == "v1" and objects.reads == 3  # its own: the parent is known
    assert observer.lineage("v0") is None and objects.reads == 4
    for version in ("v1", "v1-online-1", "v1-online-2", "v0"):
        observer(None, version, np.ones((3, len(SERVED) - 1)), np.zeros(3))
    assert objects.reads == 4
    assert window.sample("v1").rows[Source.SERVED] == 3 and window.sample("v0").rows[Source.SERVED] == 0


def test_a_lineage_that_cannot_be_read_skips_the_row_and_is_retried_later(
    registry: ModelRegistry, window: DriftWindow, aws: dict[str, Any]
) -> None:
    register_trained(registry, "v1")
    now = [0.0]
    observer = LineageObserver(window, ReferenceStore(registry.objects), retry_seconds=60, clock=lambda: now[0])
    unreachable = ObjectStore(aws["s3"], "no-such-bucket")
    observer.references.versions.objects = unreachable

    observer(None, "v1", np.ones((1, len(SERVED) - 1)), np.zeros(1))  # the recommendation is not failed

    observer.references.versions.objects = registry.objects
    now[0] = 30.0
    assert observer.lineage("v1") is None  # not retried on every request
    now[0] = 61.0
    assert observer.lineage("v1") == "v1"
    assert window.sample("v1").rows[Source.SERVED] == 0


def test_two_checks_racing_for_the_baseline_keep_one(registry: ModelRegistry, window: DriftWindow) -> None:
    """Both find no baseline, both offer theirs: the first stored stays, and both report it."""
    register_trained(registry, "v1")
    registry.promote("v1")
    both_looked = threading.Barrier(2, timeout=10)

    class RacingBaselines(ServedBaselines):
        looked = False

        def get(self, reference_version: str) -> ReferenceSample | None:
            found = super().get(reference_version)
            if not self.looked:
                self.looked = True
                both_looked.wait()  # neither takes one before the other has looked
            return found

    rng = np.random.default_rng(6)
    window.observe_served("v1", served_rows(rng, CAPACITY))
    reports: list[DriftReport] = []
    checks = [
        threading.Thread(
            target=lambda hour=hour: reports.append(
                make_service(registry, window, RacingBaselines(registry.objects)).check(
                    now=datetime(2026, 12, 1, hour, tzinfo=UTC)
                )
            )
        )
        for hour in (12, 13)
    ]
    for check in checks:
        check.start()
    for check in checks:
        check.join()

    assert len(reports) == 2
    assert {verdict for report in reports for verdict in verdicts(report, Source.SERVED).values()} == {
        FeatureVerdict.BASELINE
    }
    stored = ServedBaselines(registry.objects).get("v1")
    assert stored is not None
    assert {report.served_baseline_taken_at for report in reports} == {stored.created_at}


def test_taking_a_baseline_where_one_is_stored_returns_the_stored_one(registry: ModelRegistry) -> None:
    baselines = ServedBaselines(registry.objects)
    first, second = (
        WindowSample("v1", build_reference("v1", served_rows(np.random.default_rng(seed), 200), []).sample, rows, rows)
        for seed, rows in ((7, {Source.SERVED: 200, Source.EVENTS: 0}), (8, {Source.SERVED: 200, Source.EVENTS: 0}))
    )
    kept = baselines.take("v1", first, datetime(2026, 12, 1, 12, tzinfo=UTC))
    again = baselines.take("v1", second, datetime(2026, 12, 1, 13, tzinfo=UTC))
    assert again.created_at == kept.created_at == "2026-12-01T12:00:00+00:00"
    np.testing.assert_array_equal(again.sample.numeric["mf_score"], kept.sample.numeric["mf_score"])


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
