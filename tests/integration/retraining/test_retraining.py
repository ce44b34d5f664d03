"""The retrain status and its lock in a real Redis, the service's requests and the state machine's records over moto
S3 drift reports, and the new-interaction count kept by the stream consumer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.settings import Settings
from recloop.drift.reports import DriftReports
from recloop.features.store import FeatureStore
from recloop.ingest.batch import process_records
from recloop.ingest.consumer import DeadLetters, StreamConsumer
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.results import UpdateOutcome, UpdateResult
from recloop.learning.online.stats import OnlineStats
from recloop.retraining.launcher import NotConfiguredLauncher, RetrainingNotConfiguredError
from recloop.retraining.model import RetrainRun, RetrainTrigger, RunOutcome
from recloop.retraining.performance import FirstReading, LiveHitRate, OnlineHeldOutError
from recloop.retraining.service import RetrainInProgressError, RetrainService, UnknownRetrainRunError
from recloop.retraining.status import RECENT_RUNS, RetrainStatusStore
from tests.support.environment import TEST_BUCKET
from tests.support.learning import tastes
from tests.support.retraining import drift_report
from tests.support.stream import records

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOCK_SECONDS = 3600
SETTINGS = Settings.model_validate({"MIN_NEW_INTERACTIONS": 100, "RETRAIN_INTERVAL_HOURS": 24})
MIN_POSITIVES = 200


class RecordingLauncher:
    """Starts nothing: records what it was asked to start, or fails as Step Functions would."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, dict[str, Any]]] = []
        self.failure: Exception | None = None

    def require_configured(self) -> None:
        return None

    def launch(self, execution_name: str, execution_input: Mapping[str, Any]) -> str:
        if self.failure is not None:
            raise self.failure
        self.launched.append((execution_name, dict(execution_input)))
        return f"arn:aws:states:us-east-1:123456789012:execution:recloop-retrain:{execution_name}"

    def progress(self, execution_arn: str) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(redis_client: redis.Redis) -> RetrainStatusStore:
    return RetrainStatusStore(redis_client, LOCK_SECONDS)


@pytest.fixture
def reports(aws: dict[str, Any]) -> DriftReports:
    return DriftReports(ObjectStore(aws["s3"], TEST_BUCKET))


@pytest.fixture
def launcher() -> RecordingLauncher:
    return RecordingLauncher()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(
    store: RetrainStatusStore,
    reports: DriftReports,
    launcher: RecordingLauncher,
    redis_client: redis.Redis,
    clock: Clock,
) -> RetrainService:
    stats = OnlineStats(redis_client)
    # As the container composes it: the live hit rate where a ranker serves, else the held-out error.
    performance = FirstReading(LiveHitRate(stats, MIN_POSITIVES), OnlineHeldOutError(stats))
    return RetrainService(store, reports, performance, launcher, SETTINGS, clock=clock)


def a_run(name: str = "retrain-manual-20261201T120000Z") -> RetrainRun:
    return RetrainRun(execution_name=name, trigger=RetrainTrigger.MANUAL, reason="test", started_at=NOW.isoformat())


# ---- the status store ------------------------------------------------------------------------------------------------


def test_an_empty_status_reads_as_never_retrained(store: RetrainStatusStore) -> None:
    status = store.read()
    assert not status.retraining_in_progress
    assert status.last_retrain_time is None
    assert status.new_interactions_since_retrain == 0
    assert status.last_drift_score is None
    assert status.metrics.total_retrains == 0
    assert status.last_run is None and status.recent_runs == []


def test_the_lock_is_held_by_one_run_and_carries_a_ttl(store: RetrainStatusStore, redis_client: redis.Redis) -> None:
    assert store.begin(a_run("retrain-manual-20261201T120000Z"))
    assert not store.begin(a_run("retrain-drift-20261201T120100Z"))
    assert 0 < redis_client.ttl(Keys.RETRAIN_LOCK) <= LOCK_SECONDS
    status = store.read()
    assert status.retraining_in_progress
    assert status.running_execution == "retrain-manual-20261201T120000Z"
    assert status.last_run is not None and status.last_run.execution_name == "retrain-manual-20261201T120000Z"


def test_a_lock_left_by_a_dead_execution_expires(redis_client: redis.Redis) -> None:
    store = RetrainStatusStore(redis_client, lock_seconds=1)
    assert store.begin(a_run("retrain-manual-20261201T120000Z"))  # its execution dies: nobody releases the lock
    time.sleep(1.2)
    assert not store.read().retraining_in_progress
    assert store.begin(a_run("retrain-schedule-20261201T1300Z"))


def test_only_the_holder_releases_the_lock(store: RetrainStatusStore) -> None:
    assert store.begin(a_run("retrain-manual-20261201T120000Z"))
    store.release("retrain-drift-20261201T1100Z")
    assert store.read().retraining_in_progress
    store.release("retrain-manual-20261201T120000Z")
    assert not store.read().retraining_in_progress


def test_the_status_lists_the_newest_finished_runs_newest_first(store: RetrainStatusStore) -> None:
    for n in range(RECENT_RUNS + 3):
        run = a_run(f"retrain-manual-20261201T12{n:02d}00Z")
        assert store.begin(run)
        store.end(run.model_copy(update={"outcome": RunOutcome.SUCCEEDED, "finished_at": NOW.isoformat()}))
    assert store.begin(a_run("retrain-manual-20261201T130000Z"))  # running: the last run, not yet a finished one

    status = store.read()

    assert len(status.recent_runs) == RECENT_RUNS
    assert status.recent_runs[0].execution_name == f"retrain-manual-20261201T12{RECENT_RUNS + 2:02d}00Z"
    assert status.last_run is not None and status.last_run.outcome is RunOutcome.RUNNING


# ---- the service -----------------------------------------------------------------------------------------------------


def test_a_forced_request_starts_a_manual_retrain(service: RetrainService, launcher: RecordingLauncher) -> None:
    result = service.request(force=True, reason="Manual trigger for testing")
    assert result.triggered
    assert result.trigger is RetrainTrigger.MANUAL
    assert result.reason == "Manual trigger for testing"
    assert result.execution_name == "retrain-manual-20261201T120000Z"
    assert launcher.launched == [
        (
            "retrain-manual-20261201T120000Z",
            {
                "execution_name": "retrain-manual-20261201T120000Z",
                "trigger": "manual",
                "reason": "Manual trigger for testing",
                "requested_at": "2026-12-01T12:00:00+00:00",
                "events_prefix": "events/",
            },
        )
    ]
    status = result.status
    assert status.retraining_in_progress
    assert status.metrics.total_retrains == 1 and status.metrics.manual_retrains == 1
    assert status.last_run is not None
    assert status.last_run.execution_arn is not None and status.last_run.execution_arn.endswith(result.execution_name)


def test_a_second_forced_request_while_one_runs_is_a_conflict(
    service: RetrainService, launcher: RecordingLauncher
) -> None:
    service.request(force=True)
    with pytest.raises(RetrainInProgressError) as refused:
        service.request(force=True)
    assert refused.value.details["execution_name"] == "retrain-manual-20261201T120000Z"
    assert len(launcher.launched) == 1
    assert service.status().metrics.total_retrains == 1


def test_an_evaluated_request_starts_a_retrain_only_when_a_trigger_fires(
    service: RetrainService, store: RetrainStatusStore, launcher: RecordingLauncher
) -> None:
    quiet = service.request(force=False)
    assert not quiet.triggered
    assert quiet.reason == "No trigger fired (no drift report, 0/100 new interactions, 0.0/24 h)"
    assert launcher.launched == []

    store.add_new_interactions(100)
    fired = service.request(force=False)
    assert fired.triggered and fired.trigger is RetrainTrigger.VOLUME
    assert fired.execution_name == "retrain-volume-20261201T120000Z"
    assert fired.status.metrics.volume_triggered_retrains == 1


def test_drift_starts_a_retrain_and_its_score_is_recorded(
    service: RetrainService, reports: DriftReports, clock: Clock
) -> None:
    reports.save(drift_report(NOW - timedelta(minutes=5), score=0.0234))
    result = service.request(force=False)
    assert result.reason == "Data drift detected (score: 0.0234)"
    assert result.execution_name == "retrain-drift-20261201T120000Z"
    assert result.status.last_drift_score == pytest.approx(0.0234)
    assert result.status.metrics.drift_triggered_retrains == 1

    # A redelivered trigger evaluates again while the retrain runs: no second one.
    again = service.request(force=False)
    assert not again.triggered
    assert again.reason == "Retraining already in progress (retrain-drift-20261201T120000Z)"

    # Once it succeeded, the same report is older than the retrain and starts nothing.
    clock.now = NOW + timedelta(minutes=30)
    service.record_finished("retrain-drift-20261201T120000Z")
    assert not service.request(force=False).triggered


def test_the_performance_trigger_reads_online_learnings_held_out_error(
    service: RetrainService, redis_client: redis.Redis
) -> None:
    stats = OnlineStats(redis_client)
    for error in (0.50, 0.50, 0.50, 0.50):
        stats.record(UpdateResult(outcome=UpdateOutcome.PUBLISHED, error_before=error, error_after=error, update_ms=5))
    # The champion on the newest events: 0.9, against a baseline of the served errors (0.5 x 4, 0.9).
    stats.record(UpdateResult(outcome=UpdateOutcome.ROLLED_BACK, error_before=0.9, error_after=1.0, update_ms=5))
    result = service.request(force=False)
    assert result.trigger is RetrainTrigger.PERFORMANCE
    assert result.reason == "Performance degraded (online_held_out_error 0.9000 vs baseline 0.5800, 55% worse)"


def judged_updates(stats: OnlineStats, rates: list[float], start: datetime, judged: int = 100) -> None:
    """One online update per rate, a minute apart, each judging `judged` positive events against served lists."""
    for n, rate in enumerate(rates):
        result = UpdateResult(
            outcome=UpdateOutcome.PUBLISHED, events=500, served_judged=judged, served_hits=round(rate * judged)
        )
        stats.record(result, now=(start + timedelta(minutes=n)).timestamp())


def test_the_performance_trigger_reads_the_champions_live_hit_rate(
    service: RetrainService, redis_client: redis.Redis
) -> None:
    stats = OnlineStats(redis_client)
    # Baseline: 6 updates at 30%; now: the newest 200 judged events at 15%.
    judged_updates(stats, [0.30] * 6 + [0.15, 0.15], NOW - timedelta(hours=1))
    result = service.request(force=False)
    assert result.trigger is RetrainTrigger.PERFORMANCE
    assert result.reason == "Performance degraded (live_hit_rate_at_10 0.1500 vs baseline 0.3000, 50% worse)"


@pytest.mark.parametrize(
    ("rates", "why"),
    [
        ([0.30] * 6 + [0.27, 0.27], "a drop of 10% is within PERFORMANCE_DROP_THRESHOLD (20%)"),
        ([0.30, 0.15, 0.15], "the baseline rests on 100 judged events, fewer than PERFORMANCE_MIN_POSITIVES"),
        ([0.30] * 6 + [0.20], "one bad update of 100 judged events is half of the current window: 25% vs 30%"),
    ],
)
def test_the_live_hit_rate_does_not_fire_on_a_small_drop_or_too_little_evidence(
    service: RetrainService, redis_client: redis.Redis, rates: list[float], why: str
) -> None:
    judged_updates(OnlineStats(redis_client), rates, NOW - timedelta(hours=1))
    assert service.request(force=False).trigger is None, why


def test_after_a_retrain_the_live_hit_rate_baseline_starts_again(
    service: RetrainService, redis_client: redis.Redis, clock: Clock
) -> None:
    stats = OnlineStats(redis_client)
    judged_updates(stats, [0.40] * 6, NOW - timedelta(hours=2))
    started = service.request(force=True)
    service.record_finished(started.execution_name or "")
    # The new model's traffic: steady at 20%. Compared with the old model's 40% it would look 50% worse.
    judged_updates(stats, [0.20] * 6, NOW + timedelta(minutes=1))
    clock.now = NOW + timedelta(hours=1)
    assert service.request(force=False).trigger is None


def test_a_success_resets_the_count_to_what_arrived_during_the_run(
    service: RetrainService, store: RetrainStatusStore, clock: Clock
) -> None:
    store.add_new_interactions(150)
    started = service.request(force=False)
    store.add_new_interactions(7)  # while the retrain runs
    clock.now = NOW + timedelta(hours=1)
    finished = service.record_finished(started.execution_name or "")
    assert finished.outcome is RunOutcome.SUCCEEDED
    status = service.status()
    assert not status.retraining_in_progress
    assert status.new_interactions_since_retrain == 7
    assert status.last_retrain_time == "2026-12-01T13:00:00+00:00"
    assert status.last_run is not None and status.last_run.finished_at == "2026-12-01T13:00:00+00:00"
    assert status.recent_runs == [finished]


def test_a_failure_is_recorded_counted_once_and_releases_the_lock(
    service: RetrainService, store: RetrainStatusStore
) -> None:
    store.add_new_interactions(10)
    name = service.request(force=True).execution_name or ""
    failed = service.record_failed(name, "States.TaskFailed: the archive is empty")
    assert failed.outcome is RunOutcome.FAILED
    assert service.record_failed(name, "retried task") == failed  # a retried task changes nothing
    status = service.status()
    assert not status.retraining_in_progress
    assert status.metrics.failed_retrains == 1
    assert status.last_retrain_time is None
    assert status.new_interactions_since_retrain == 10
    assert status.last_run is not None and status.last_run.error == "States.TaskFailed: the archive is empty"
    assert status.recent_runs == [failed]  # once, though its task was retried


def test_the_state_machine_records_the_execution_it_runs(service: RetrainService) -> None:
    name = service.request(force=True).execution_name or ""
    arn = f"arn:aws:states:us-east-1:123456789012:execution:recloop-retrain:{name}"
    run = service.record_started(name, RetrainTrigger.MANUAL, "ignored: the run exists", arn)
    assert run.execution_arn == arn and run.reason == "Manual trigger"
    assert service.status().metrics.total_retrains == 1  # not counted twice


def test_an_execution_started_elsewhere_begins_its_run_when_it_starts(service: RetrainService) -> None:
    run = service.record_started("retrain-schedule-20261201T120000Z", RetrainTrigger.SCHEDULE, "weekly", "arn:x")
    status = service.status()
    assert status.running_execution == run.execution_name
    assert status.metrics.scheduled_retrains == 1
    with pytest.raises(RetrainInProgressError):
        service.record_started("retrain-manual-20261201T120100Z", RetrainTrigger.MANUAL, "now", "arn:y")


def test_finishing_a_run_that_is_not_the_last_one_is_refused(service: RetrainService) -> None:
    service.request(force=True)
    with pytest.raises(UnknownRetrainRunError):
        service.record_finished("retrain-drift-20261130T1200Z")
    assert service.status().retraining_in_progress


def test_a_launch_that_fails_releases_the_lock_and_records_why(
    service: RetrainService, launcher: RecordingLauncher
) -> None:
    launcher.failure = RuntimeError("state machine unreachable")
    with pytest.raises(RuntimeError):
        service.request(force=True)
    status = service.status()
    assert not status.retraining_in_progress
    assert status.last_run is not None and status.last_run.outcome is RunOutcome.FAILED
    assert status.last_run.error == "not started: state machine unreachable"


def test_without_a_state_machine_nothing_is_locked(
    store: RetrainStatusStore, reports: DriftReports, redis_client: redis.Redis
) -> None:
    performance = OnlineHeldOutError(OnlineStats(redis_client))
    service = RetrainService(store, reports, performance, NotConfiguredLauncher(), SETTINGS)
    with pytest.raises(RetrainingNotConfiguredError):
        service.request(force=True)
    assert not service.status().retraining_in_progress
    assert not service.request(force=False).triggered  # evaluating still works


# ---- the stream consumer's count ----------------------------------------------------------------------------------


def test_the_consumer_counts_each_new_event_once_per_batch(
    aws: dict[str, Any], redis_client: redis.Redis, store: RetrainStatusStore
) -> None:
    settings = Settings.from_env({})
    feature_store = FeatureStore(redis_client, settings)
    consumer = StreamConsumer(
        feature_store, ObjectStore(aws["s3"], TEST_BUCKET), OnlineBuffer(redis_client, settings), store
    )
    history = tastes(4, 1_700_000_000.0, {"a": ["a0", "a1", "a2"]})
    batch = records(history)
    dead_letters = DeadLetters(queue=None)  # type: ignore[arg-type]  # no poison record in these batches

    calls = []
    original = store.add_new_interactions
    store.add_new_interactions = lambda count: (calls.append(count), original(count))  # type: ignore[method-assign]
    assert process_records(batch, consumer, dead_letters).failed == {}
    assert store.read().new_interactions_since_retrain == len(history)
    assert calls == [len(history)]  # one INCRBY for the batch

    # The same events redelivered (new sequence numbers): nothing new.
    assert process_records(records(history, first_sequence=5000), consumer, dead_letters).failed == {}
    assert store.read().new_interactions_since_retrain == len(history)
