"""The CloudWatch metrics RecLoop prints (EMF): their names, units, dimensions and values, read back from stdout."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from aws_lambda_powertools.metrics import Metrics

from recloop.core.events import EventType
from recloop.drift.model import DriftReport
from recloop.experiments.attribution import Credit
from recloop.learning.online.results import UpdateOutcome, UpdateResult
from recloop.ops import cloudwatch
from recloop.retraining.model import RetrainRun, RetrainTrigger, RunOutcome
from recloop.serving.recommender import Recommendation
from tests.support.emf import Datum, emitted, every_metric, named, printed_by
from tests.support.environment import ROOT

SERVICE = {"service": "recloop"}


@pytest.fixture(autouse=True)
def powertools_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As the template sets them for every function; the invocation's record starts and ends empty."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RecLoop")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "recloop")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    Metrics().clear_metrics()
    yield
    Metrics().clear_metrics()


def printed(capsys: pytest.CaptureFixture[str], record: Callable[[], None]) -> list[Datum]:
    capsys.readouterr()
    record()
    return emitted(capsys.readouterr().out)


def answer(cold_start: bool = False, degraded: bool = False, experiment: str | None = None) -> Recommendation:
    return Recommendation(
        recommendation_id="rec_" + "0" * 32,
        user_id="u1",
        items=[],
        model_version="mf-1",
        cold_start=cold_start,
        degraded=degraded,
        experiment_id=experiment,
        variant="challenger" if experiment else None,
    )


def test_a_requests_latency_and_answer_join_the_invocations_record() -> None:
    def request() -> None:
        cloudwatch.record_latency("POST /api/v1/recommend", 12.5)
        cloudwatch.record_latency("GET /api/v1/health", 3.0)  # not a latency metric
        cloudwatch.record_recommendation(answer(cold_start=True))

    data = printed_by(request)

    assert {(d.name, d.unit, tuple(d.values)) for d in data} == {
        ("RecommendLatency", "Milliseconds", (12.5,)),
        ("ColdStartRecommendations", "Count", (1.0,)),
        ("DegradedRecommendations", "Count", (0.0,)),
    }
    assert all(d.namespace == "RecLoop" and d.dimensions == SERVICE for d in data)


def test_event_routes_have_latencies_of_their_own() -> None:
    def requests() -> None:
        cloudwatch.record_latency("POST /api/v1/event", 4.0)
        cloudwatch.record_latency("POST /api/v1/events/batch", 9.0)

    data = printed_by(requests)
    assert {(d.name, d.values[0]) for d in data} == {("EventLatency", 4.0), ("EventBatchLatency", 9.0)}


def test_an_experiments_answer_is_an_impression_of_its_variant_on_a_line_of_its_own() -> None:
    data = printed_by(lambda: cloudwatch.record_recommendation(answer(experiment="exp_1")))

    (impression,) = named(data, "ExperimentImpressions")
    assert impression.dimensions == {"Experiment": "exp_1", "Variant": "challenger", **SERVICE}
    assert impression.values == [1.0] and impression.unit == "Count"
    # The answer's own metrics keep the record's dimensions.
    assert named(data, "ColdStartRecommendations")[0].dimensions == SERVICE


def test_events_are_counted_per_type(capsys) -> None:
    types = [EventType.CLICK, EventType.VIEW, EventType.CLICK]
    data = printed(capsys, lambda: cloudwatch.record_events(types))

    assert {(d.dimensions["EventType"], d.values[0]) for d in named(data, "Events")} == {("click", 2.0), ("view", 1.0)}
    assert all(d.dimensions.keys() == {"EventType", "service"} for d in data)


def test_conversions_are_counted_per_experiment_variant_and_negatives_are_not(capsys) -> None:
    credits = [
        Credit("e1", "rec_1", "exp_1", "control", True),
        Credit("e2", "rec_2", "exp_1", "control", True),
        Credit("e3", "rec_3", "exp_1", "challenger", True),
        Credit("e4", "rec_4", "exp_1", "challenger", False),  # a dislike
    ]
    data = printed(capsys, lambda: cloudwatch.record_conversions(credits))

    counted = {(d.dimensions["Experiment"], d.dimensions["Variant"]): d.values[0] for d in data}
    assert counted == {("exp_1", "control"): 2.0, ("exp_1", "challenger"): 1.0}
    assert {d.name for d in data} == {"AttributedConversions"}


def test_an_online_update_reports_its_outcome_duration_and_the_served_models_error(capsys) -> None:
    published = UpdateResult(
        outcome=UpdateOutcome.PUBLISHED, error_before=2.6, error_after=2.4, mf_updated=True, update_ms=80.0
    )
    rolled_back = UpdateResult(
        outcome=UpdateOutcome.ROLLED_BACK, error_before=2.5, error_after=2.9, mf_updated=False, update_ms=70.0
    )
    first = {d.name: d for d in printed(capsys, lambda: cloudwatch.record_online_update(published))}
    second = {d.name: d for d in printed(capsys, lambda: cloudwatch.record_online_update(rolled_back))}

    assert {name: d.values[0] for name, d in first.items()} == {
        "OnlineUpdatesPublished": 1.0,
        "OnlineUpdatesRolledBack": 0.0,
        "OnlineUpdateDuration": 80.0,
        "PredictionError": 2.4,  # the published model's
    }
    assert {name: d.values[0] for name, d in second.items()} == {
        "OnlineUpdatesPublished": 0.0,
        "OnlineUpdatesRolledBack": 1.0,
        "OnlineUpdateDuration": 70.0,
        "PredictionError": 2.5,  # the champion's, which still serves
    }
    assert first["OnlineUpdateDuration"].unit == "Milliseconds" and first["PredictionError"].unit == "None"
    assert all(d.dimensions == SERVICE for d in [*first.values(), *second.values()])


def test_an_update_that_did_not_run_is_no_metric_and_a_diverged_error_is_left_out(capsys) -> None:
    assert printed(capsys, lambda: cloudwatch.record_online_update(UpdateResult(outcome=UpdateOutcome.EMPTY))) == []
    diverged = UpdateResult(
        outcome=UpdateOutcome.PUBLISHED, error_before=float("inf"), error_after=2.0, mf_updated=False, update_ms=5.0
    )
    names = {d.name for d in printed(capsys, lambda: cloudwatch.record_online_update(diverged))}
    assert "PredictionError" not in names and "OnlineUpdatesPublished" in names


def test_a_manual_rollback_is_counted(capsys) -> None:
    (datum,) = printed(capsys, cloudwatch.record_manual_rollback)
    assert (datum.name, datum.values, datum.dimensions) == ("OnlineManualRollbacks", [1.0], SERVICE)


def test_a_drift_check_reports_its_score_and_drifted_features(capsys) -> None:
    report = DriftReport.model_construct(drift_score=0.31, drifted_features=["score", "event_type_mix"])
    data = {d.name: d for d in printed(capsys, lambda: cloudwatch.record_drift(report))}
    assert {name: d.values[0] for name, d in data.items()} == {"DriftScore": 0.31, "DriftedFeatures": 2.0}


def test_retrain_runs_are_counted_per_outcome_with_their_duration(capsys) -> None:
    started = RetrainRun(
        execution_name="retrain-manual-20260101T000000Z",
        trigger=RetrainTrigger.MANUAL,
        reason="test",
        started_at="2026-01-01T00:00:00+00:00",
    )
    failed = started.model_copy(update={"outcome": RunOutcome.FAILED, "finished_at": "2026-01-01T00:12:30+00:00"})

    (start,) = printed(capsys, lambda: cloudwatch.record_retrain(started))
    end = {d.name: d for d in printed(capsys, lambda: cloudwatch.record_retrain(failed))}

    assert (start.name, start.dimensions, start.values) == ("RetrainRuns", {"Outcome": "started", **SERVICE}, [1.0])
    assert end["RetrainRuns"].dimensions == {"Outcome": "failed", **SERVICE}
    assert (end["RetrainDuration"].unit, end["RetrainDuration"].values) == ("Seconds", [750.0])


def test_every_metric_is_documented_with_its_unit_and_dimensions() -> None:
    """docs/operations.md's table names each metric once, with the unit and the dimensions it is printed with."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## CloudWatch metrics and alarms", 1)[1].split("### Metrics", 1)[1].split("\n### ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`\w+`", cells[0]):
            documented[cells[0].strip("`")] = (cells[1], set(re.findall(r"`(\w+)`", cells[2])))
    data = every_metric()
    assert {d.name for d in data} == set(documented)
    for datum in data:
        unit, dimensions = documented[datum.name]
        assert unit == datum.unit, datum.name
        assert dimensions == set(datum.dimensions), datum.name


def test_a_metric_that_cannot_be_written_fails_nothing(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    cloudwatch.record_manual_rollback()  # Powertools refuses a line without a namespace: logged, not raised
    cloudwatch.record_events([EventType.VIEW])
    assert emitted(capsys.readouterr().out) == []
