"""The CloudWatch Embedded Metric Format lines a handler printed, read back as CloudWatch Logs reads them."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools.metrics import Metrics


@dataclass(frozen=True)
class Datum:
    """One metric of one EMF line under one of its dimension sets."""

    namespace: str
    name: str
    unit: str
    dimensions: dict[str, str]
    values: list[float]


def emitted(output: str) -> list[Datum]:
    """Every metric of the EMF lines in `output` (other lines, such as log records, are skipped)."""
    data: list[Datum] = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "_aws" not in record:
            continue
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = {name: record[name] for name in dimension_set}
                for metric in directive["Metrics"]:
                    value = record[metric["Name"]]
                    values = value if isinstance(value, list) else [value]
                    data.append(Datum(directive["Namespace"], metric["Name"], metric["Unit"], dimensions, values))
    return data


def named(data: list[Datum], name: str) -> list[Datum]:
    return [datum for datum in data if datum.name == name]


def printed_by(record: Callable[[], None]) -> list[Datum]:
    """What `record` prints, run inside a handler wrapped as the API functions' are (Powertools' `log_metrics`
    prints the invocation's record at the end). POWERTOOLS_METRICS_NAMESPACE must be set."""

    @Metrics().log_metrics
    def handler(event: dict, context: object) -> None:
        record()

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        handler({}, None)
    return emitted(output.getvalue())


def every_metric() -> list[Datum]:
    """One call of each of `recloop.ops.cloudwatch`'s functions, with every kind of answer, update and run."""
    from recloop.core.events import EventType
    from recloop.drift.model import DriftReport
    from recloop.experiments.attribution import Credit
    from recloop.learning.online.results import UpdateOutcome, UpdateResult
    from recloop.ops import cloudwatch
    from recloop.retraining.model import RetrainRun, RetrainTrigger, RunOutcome
    from recloop.serving.recommender import Recommendation

    def everything() -> None:
        for endpoint in cloudwatch.LATENCY_METRICS:
            cloudwatch.record_latency(endpoint, 1.0)
        answer = Recommendation("rec_1", "u1", [], "mf-1", cold_start=False, experiment_id="exp_1", variant="control")
        cloudwatch.record_recommendation(answer)
        cloudwatch.record_events([EventType.CLICK])
        cloudwatch.record_conversions([Credit("e1", "rec_1", "exp_1", "control", True)])
        update = UpdateResult(outcome=UpdateOutcome.PUBLISHED, error_before=1.0, error_after=1.0, update_ms=1.0)
        cloudwatch.record_online_update(update)
        cloudwatch.record_manual_rollback()
        cloudwatch.record_drift(DriftReport.model_construct(drift_score=0.1, drifted_features=[]))
        run = RetrainRun(execution_name="r", trigger=RetrainTrigger.MANUAL, reason="t", started_at="2026-01-01T00:00")
        cloudwatch.record_retrain(run)
        ended = {"outcome": RunOutcome.SUCCEEDED, "finished_at": "2026-01-01T00:10"}
        cloudwatch.record_retrain(run.model_copy(update=ended))

    return printed_by(everything)
