"""The stack's alarms in LocalStack: a held-out error over PredictionErrorThreshold puts PredictionErrorAlarm into
ALARM, and its notice reaches an SQS queue subscribed to the alarm topic. The e2e profile deploys the alarm with a
one-minute period (PredictionErrorAlarmPeriod), the interval at which LocalStack evaluates it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.runtime import RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def alarm_queue(stack: RunningStack, aws: Callable[[str], Any]) -> Iterator[str]:
    """An SQS queue subscribed to the stack's alarm topic, removed afterwards."""
    sqs, sns = aws("sqs"), aws("sns")
    queue_url = sqs.create_queue(QueueName=f"recloop-e2e-alarms-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(
        TopicArn=stack.outputs["AlarmTopicArn"], Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    yield queue_url
    sns.unsubscribe(SubscriptionArn=subscription)
    sqs.delete_queue(QueueUrl=queue_url)


def alarm_notices(sqs: Any, queue_url: str, alarm_name: str, state: str, timeout: float) -> list[dict[str, Any]]:
    """The alarm's notices of a change to `state` that reach the queue within `timeout` seconds (others are left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
        notices = [json.loads(json.loads(m["Body"])["Message"]) for m in reply.get("Messages", [])]
        found = [n for n in notices if n.get("AlarmName") == alarm_name and n.get("NewStateValue") == state]
        if found:
            return found
    raise TimeoutError(f"no {state} notice of {alarm_name} in {timeout:.0f} s")


def test_a_prediction_error_over_the_threshold_raises_the_alarm_and_its_notice_arrives(
    stack: RunningStack, aws: Callable[[str], Any], alarm_queue: str
) -> None:
    cloudwatch = aws("cloudwatch")
    alarm_name = aws("cloudformation").describe_stack_resource(
        StackName=stack.profile.stack_name, LogicalResourceId="PredictionErrorAlarm"
    )["StackResourceDetail"]["PhysicalResourceId"]
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == ("PredictionError", "Average", 60)
    assert alarm["AlarmActions"] == [stack.outputs["AlarmTopicArn"]]
    assert alarm["StateValue"] != "ALARM"

    # What OnlineUpdateFunction's EMF line becomes in CloudWatch: one update's held-out error, twice the threshold.
    cloudwatch.put_metric_data(
        Namespace=alarm["Namespace"],
        MetricData=[
            {
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm["Dimensions"],
                "Value": alarm["Threshold"] * 2,
                "Unit": "None",
            }
        ],
    )

    started = time.monotonic()
    deadline = started + 4 * alarm["Period"]
    state = alarm["StateValue"]
    while state != "ALARM" and time.monotonic() < deadline:
        time.sleep(2)
        state = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["StateValue"]
    assert state == "ALARM", f"still {state} after {time.monotonic() - started:.0f} s"
    print(f"{alarm_name}: ALARM {time.monotonic() - started:.0f} s after the metric")

    (notice, *_) = alarm_notices(aws("sqs"), alarm_queue, alarm_name, "ALARM", timeout=60)
    assert notice["Trigger"]["MetricName"] == "PredictionError"
    assert notice["Trigger"]["Namespace"] == alarm["Namespace"]
    print(f"notice: {notice['NewStateReason']}")
