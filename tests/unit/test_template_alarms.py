"""template.yaml's alarms and dashboard: every alarm notifies the alarm topic; every function, queue, stream and state
machine has its alarms; the alarms and widgets on the functions' own metrics name metrics the functions print; the
dashboard is valid JSON, and the local runtime turns it off."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cfnlint.decode import decode

from local.deploy import stack_parameters
from local.services import DEV, E2E
from tests.support.emf import every_metric
from tests.support.environment import ROOT

TOPIC = {"Ref": "AlarmTopic"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    return decoded


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: resource for name, resource in template["Resources"].items() if resource["Type"] == kind}


def watched(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric math."""
    properties = alarm["Properties"]
    if "MetricName" in properties:
        return [{key: properties.get(key) for key in ("Namespace", "MetricName", "Dimensions")}]
    return [query["MetricStat"]["Metric"] for query in properties["Metrics"] if "MetricStat" in query]


def alarms_on(template: dict[str, Any], namespace: str, metric: str) -> list[dict[str, Any]]:
    return [
        alarm
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for watched_metric in watched(alarm)
        if watched_metric["Namespace"] == namespace and watched_metric["MetricName"] == metric
    ]


def dimension(alarm: dict[str, Any], name: str) -> Any:
    (metric,) = watched(alarm)
    return next(d["Value"] for d in metric["Dimensions"] if d["Name"] == name)


def test_every_alarm_notifies_the_alarm_topic_when_it_fires_and_when_it_clears(template) -> None:
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 20
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [TOPIC], name
        assert alarm["Properties"]["OKActions"] == [TOPIC], name
    (subscription,) = of_type(template, "AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail" and subscription["Properties"]["TopicArn"] == TOPIC
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_its_errors_and_throttles_alarm(template, metric: str) -> None:
    functions = set(of_type(template, "AWS::Serverless::Function"))
    assert len(functions) == 8
    covered = {dimension(alarm, "FunctionName")["Ref"] for alarm in alarms_on(template, "AWS/Lambda", metric)}
    assert covered == functions


def test_queues_streams_and_state_machines_have_their_alarms(template) -> None:
    depths = alarms_on(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert {dimension(a, "QueueName")["Fn::GetAtt"][0] for a in depths} == set(of_type(template, "AWS::SQS::Queue"))
    streams = alarms_on(template, "AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds")
    assert {dimension(a, "StreamName")["Ref"] for a in streams} == set(of_type(template, "AWS::Kinesis::Stream"))
    machines = {dimension(a, "StateMachineArn")["Ref"] for a in alarms_on(template, "AWS/States", "ExecutionsFailed")}
    assert machines == set(of_type(template, "AWS::Serverless::StateMachine"))
    five_hundreds = alarms_on(template, "AWS/ApiGateway", "5XXError")
    assert len(five_hundreds) == 1 and dimension(five_hundreds[0], "Stage") == {"Ref": "StageName"}


def test_the_cache_alarms_exist_only_with_the_cache(template) -> None:
    cache_alarms = [a for a in of_type(template, "AWS::CloudWatch::Alarm").values() if "AWS/ElastiCache" in str(a)]
    metrics = {m["MetricName"] for alarm in cache_alarms for m in watched(alarm)}
    assert metrics == {"DatabaseMemoryUsagePercentage", "Evictions"}
    assert all(alarm["Condition"] == "CreateCache" for alarm in cache_alarms)


@pytest.fixture
def printed_metrics(monkeypatch: pytest.MonkeyPatch, template) -> set[str]:
    """The names of the metrics the functions print, with the service the template gives them."""
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", template["Parameters"]["MetricsNamespace"]["Default"])
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", variables["POWERTOOLS_SERVICE_NAME"])
    data = every_metric()
    assert {d.dimensions["service"] for d in data} == {"recloop"}
    return {d.name for d in data}


def test_alarms_on_the_functions_metrics_watch_metrics_they_print(template, printed_metrics: set[str]) -> None:
    own = [
        metric
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for metric in watched(alarm)
        if metric["Namespace"] == {"Ref": "MetricsNamespace"}
    ]
    assert {m["MetricName"] for m in own} == {"RecommendLatency", "PredictionError", "OnlineUpdatesRolledBack"}
    assert {m["MetricName"] for m in own} <= printed_metrics
    assert all(m["Dimensions"] == [{"Name": "service", "Value": "recloop"}] for m in own)


def test_the_prediction_error_alarm_takes_its_threshold_and_period_from_parameters(template) -> None:
    alarm = template["Resources"]["PredictionErrorAlarm"]["Properties"]
    assert alarm["Threshold"] == {"Ref": "PredictionErrorThreshold"}
    assert alarm["Period"] == {"Ref": "PredictionErrorAlarmPeriod"}
    assert (alarm["MetricName"], alarm["Statistic"]) == ("PredictionError", "Average")


def dashboard_json(template: dict[str, Any], with_cache: bool) -> dict[str, Any]:
    """The dashboard body as CloudFormation renders it, parameters at their defaults, resources by their names."""
    parameters = {name: p.get("Default", name) for name, p in template["Parameters"].items()}

    def render(node: Any) -> str:
        if isinstance(node, str):
            return node
        ((function, argument),) = node.items()
        if function == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(parameters.get(m[1], m[1].replace("::", "-"))), argument)
        if function == "Fn::If":
            condition, when_true, when_false = argument
            assert condition == "CreateCache"
            return render(when_true if with_cache else when_false)
        if function == "Fn::Join":
            return argument[0].join(render(part) for part in argument[1])
        raise NotImplementedError(function)

    return json.loads(render(template["Resources"]["CloudWatchDashboard"]["Properties"]["DashboardBody"]))


@pytest.mark.parametrize("with_cache", [True, False])
def test_the_dashboard_is_valid_json_and_charts_metrics_that_exist(template, printed_metrics, with_cache) -> None:
    body = dashboard_json(template, with_cache)
    charts = [w["properties"] for w in body["widgets"] if w["type"] == "metric"]
    rows = [row for chart in charts for row in chart["metrics"]]
    namespace = template["Parameters"]["MetricsNamespace"]["Default"]
    own = {row[1] for row in rows if isinstance(row[0], str) and row[0] == namespace}
    searched = set(re.findall(r'MetricName="(\w+)"', json.dumps(rows).replace('\\"', '"')))
    assert own | searched == printed_metrics  # every metric the functions print is charted
    assert ("AWS/ElastiCache" in json.dumps(charts)) is with_cache
    (alarm_list,) = [w["properties"]["alarms"] for w in body["widgets"] if w["type"] == "alarm"]
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    assert {arn.removesuffix(".Arn") for arn in alarm_list} <= set(alarms)


def test_the_dashboard_is_behind_a_parameter_the_local_runtime_turns_off(template) -> None:
    assert template["Resources"]["CloudWatchDashboard"]["Condition"] == "DashboardOn"
    assert template["Conditions"]["DashboardOn"] == {"Fn::Equals": [{"Ref": "CreateDashboard"}, "true"]}
    assert template["Parameters"]["CreateDashboard"]["Default"] == "true"
    for profile in (DEV, E2E):
        passed = dict(p.split("=", 1) for p in stack_parameters(profile, "redis://127.0.0.1:6379/0"))
        assert passed["CreateDashboard"] == "false"
        assert set(passed) <= set(template["Parameters"])
    assert "CreateDashboard=false" in (ROOT / "samconfig.toml").read_text()
