"""What RecLoop tells CloudWatch: a small, stable set of metrics (docs/operations.md, "CloudWatch metrics and
alarms"), written as Embedded Metric Format log lines through Powertools Metrics. CloudWatch Logs turns each line
into metrics of POWERTOOLS_METRICS_NAMESPACE, with no API call on the request path.

A request's metrics (its latency, the kind of answer) join the invocation's record, which `log_metrics` in
`recloop.handlers.http.resolver.api_handler` prints once at the end. Every metric of a record shares the record's
dimensions, so a metric with a dimension of its own (an event type, an experiment's variant, a retrain's outcome),
and what the stream and workflow functions measure (an online update, a drift check), is a line of its own, printed
at once. Every metric also carries Powertools' `service` dimension (POWERTOOLS_SERVICE_NAME).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, Metrics, MetricUnit

if TYPE_CHECKING:
    from recloop.core.events import EventType
    from recloop.drift.model import DriftReport
    from recloop.experiments.attribution import Credit
    from recloop.learning.online.results import UpdateResult
    from recloop.retraining.model import RetrainRun
    from recloop.serving.recommender import Recommendation

# The routes whose handler latency is a metric (the API's own latency, per route, is API Gateway's `Latency`).
LATENCY_METRICS = {
    "POST /api/v1/recommend": "RecommendLatency",
    "POST /api/v1/event": "EventLatency",
    "POST /api/v1/events/batch": "EventBatchLatency",
}

logger = Logger(child=True)

Measure = tuple[str, MetricUnit, float]

# Shared by every Metrics() of the process: the record `log_metrics` prints at the end of the invocation.
_invocation = Metrics()


def record_latency(endpoint: str, elapsed_ms: float) -> None:
    """`endpoint` as "METHOD /resource"; only the routes of LATENCY_METRICS have one."""
    name = LATENCY_METRICS.get(endpoint)
    if name is not None:
        with _never_failing(name):
            _invocation.add_metric(name=name, unit=MetricUnit.Milliseconds, value=elapsed_ms)


def record_recommendation(result: Recommendation) -> None:
    """One answer: 1 or 0 for each kind, so that a metric's Average is the share of answers of that kind."""
    with _never_failing("ColdStartRecommendations"):
        _invocation.add_metric(name="ColdStartRecommendations", unit=MetricUnit.Count, value=int(result.cold_start))
        _invocation.add_metric(name="DegradedRecommendations", unit=MetricUnit.Count, value=int(result.degraded))
    if result.experiment_id and result.variant:
        _line(
            {"Experiment": result.experiment_id, "Variant": result.variant},
            [("ExperimentImpressions", MetricUnit.Count, 1)],
        )


def record_events(event_types: Iterable[EventType]) -> None:
    """Events stored for the first time, one line per event type."""
    for event_type, count in sorted(Counter(event_types).items()):
        _line({"EventType": str(event_type)}, [("Events", MetricUnit.Count, count)])


def record_conversions(credits: Iterable[Credit]) -> None:
    """Conversions credited to experiment variants (negative outcomes are not conversions)."""
    per_variant = Counter((credit.experiment_id, credit.variant) for credit in credits if credit.positive)
    for (experiment_id, variant), count in sorted(per_variant.items()):
        _line({"Experiment": experiment_id, "Variant": variant}, [("AttributedConversions", MetricUnit.Count, count)])


def record_online_update(result: UpdateResult) -> None:
    """An update that ran (an empty buffer or a champion that cannot learn is none): 1 or 0 for published and for
    rolled back, so that the Average of OnlineUpdatesRolledBack is the rollback rate; its duration; and the
    held-out error of the model serving after it, whose Average is the guide's avg_prediction_error."""
    if result.update_ms is None:
        return
    measures: list[Measure] = [
        ("OnlineUpdatesPublished", MetricUnit.Count, int(result.outcome == "published")),
        ("OnlineUpdatesRolledBack", MetricUnit.Count, int(result.outcome == "rolled_back")),
        ("OnlineUpdateDuration", MetricUnit.Milliseconds, result.update_ms),
    ]
    if result.served_error is not None and math.isfinite(result.served_error):
        measures.append(("PredictionError", MetricUnit.NoUnit, result.served_error))
    _line({}, measures)


def record_manual_rollback() -> None:
    _line({}, [("OnlineManualRollbacks", MetricUnit.Count, 1)])


def record_drift(report: DriftReport) -> None:
    _line(
        {},
        [
            ("DriftScore", MetricUnit.NoUnit, report.drift_score),
            ("DriftedFeatures", MetricUnit.Count, len(report.drifted_features)),
        ],
    )


def record_retrain(run: RetrainRun) -> None:
    """A retrain run as it starts (Outcome "started") or ends ("succeeded", "failed", with its duration)."""
    if run.finished_at is None:
        _line({"Outcome": "started"}, [("RetrainRuns", MetricUnit.Count, 1)])
        return
    seconds = (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds()
    _line(
        {"Outcome": str(run.outcome)},
        [("RetrainRuns", MetricUnit.Count, 1), ("RetrainDuration", MetricUnit.Seconds, seconds)],
    )


def _line(dimensions: Mapping[str, str], measures: Iterable[Measure]) -> None:
    """One EMF line now, with these dimensions (besides `service`) for each of its metrics."""
    measures = list(measures)
    with _never_failing(measures[0][0]):
        line = EphemeralMetrics()
        for name, value in dimensions.items():
            line.add_dimension(name=name, value=value)
        for name, unit, value in measures:
            line.add_metric(name=name, unit=unit, value=value)
        line.flush_metrics()


@contextmanager
def _never_failing(metric: str) -> Iterator[None]:
    """A metric that cannot be written (no namespace, a value that is not a number) must not fail what it measures."""
    try:
        yield
    except Exception as exc:
        logger.warning("metric not written", extra={"metric": metric, "error": repr(exc)})
