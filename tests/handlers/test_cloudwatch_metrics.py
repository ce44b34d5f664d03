"""The functions' CloudWatch metrics as the deployed handlers print them (EMF on stdout): the API's latency, answers
and events per type, the workflow's retrain runs. The metrics themselves: tests/unit/ops/test_cloudwatch.py."""

from __future__ import annotations

from typing import Any

from local.inprocess import ApiClient, LambdaContext, load_function
from tests.support.emf import emitted, named

SERVICE = {"service": "recloop"}


def test_a_recommend_request_prints_its_latency_and_kind_of_answer(api: ApiClient, capsys) -> None:
    status, reply = api.recommend("someone-new", 3)
    assert status == 200 and reply["cold_start"] is True

    data = emitted(capsys.readouterr().out)
    (latency,) = named(data, "RecommendLatency")
    assert latency.namespace == "RecLoop" and latency.dimensions == SERVICE and latency.unit == "Milliseconds"
    assert 0 < latency.values[0] < 10_000
    assert [d.values for d in named(data, "ColdStartRecommendations")] == [[1.0]]
    assert [d.values for d in named(data, "DegradedRecommendations")] == [[0.0]]


def test_events_are_counted_per_type_once_and_each_route_has_its_latency(api: ApiClient, capsys) -> None:
    batch = [
        {"user_id": "u1", "item_id": "i1", "event_type": "view"},
        {"user_id": "u1", "item_id": "i2", "event_type": "click"},
        {"user_id": "u2", "item_id": "i1", "event_type": "click"},
    ]
    assert api.request("event", "POST", "/api/v1/events/batch", {"events": batch})[0] == 202
    assert api.post_event(user_id="u3", item_id="i3", event_type="purchase", event_id="client-1")[0] == 202
    assert api.post_event(user_id="u3", item_id="i3", event_type="purchase", event_id="client-1")[0] == 202  # retry

    data = emitted(capsys.readouterr().out)
    per_type: dict[str, float] = {}
    for datum in named(data, "Events"):
        per_type[datum.dimensions["EventType"]] = per_type.get(datum.dimensions["EventType"], 0) + datum.values[0]
    assert per_type == {"view": 1, "click": 2, "purchase": 1}
    assert len(named(data, "EventBatchLatency")) == 1 and len(named(data, "EventLatency")) == 2


def test_a_retrain_runs_start_and_end_are_counted(aws: dict[str, Any], redis_client: Any, capsys) -> None:
    workflow = load_function("workflow")
    name = "retrain-manual-20261201T120000Z"
    begin = {"task": "begin_retrain", "execution_name": name, "trigger": "manual", "reason": "test"}
    workflow.lambda_handler(begin, LambdaContext())
    failure = {"task": "fail_retrain", "execution_name": name, "error": {"Error": "States.Timeout", "Cause": ""}}
    workflow.lambda_handler(failure, LambdaContext())

    runs = named(emitted(capsys.readouterr().out), "RetrainRuns")
    assert [(d.dimensions["Outcome"], d.values) for d in runs] == [("started", [1.0]), ("failed", [1.0])]
