"""End to end, over HTTP through API Gateway, against the SAM stack deployed in LocalStack."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.e2e.conftest import Http

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def test_event_changes_the_next_recommendation(http: Http) -> None:
    fans, crowd, user = unique("fan"), unique("crowd"), unique("user")
    events = [{"user_id": f"{fans}{n}", "item_id": item, "event_type": "like"} for n in range(3) for item in "abc"]
    events += [{"user_id": f"{crowd}{n}", "item_id": item, "event_type": "purchase"} for n in range(5) for item in "xy"]
    status, reply = http.post("/api/v1/events/batch", {"events": events})
    assert (status, reply["accepted"]) == (202, len(events))

    status, cold = http.post("/api/v1/recommend", {"user_id": user, "num_recommendations": 2})
    assert status == 200 and cold["cold_start"] is True
    assert {i["item_id"] for i in cold["items"]} == {"x", "y"}

    status, accepted = http.post("/api/v1/event", {"user_id": user, "item_id": "a", "event_type": "click"})
    assert status == 202 and accepted["features_updated"] is True
    status, warm = http.post("/api/v1/recommend", {"user_id": user, "num_recommendations": 2})
    assert warm["cold_start"] is False and warm["model_version"] == "cooccurrence"
    assert {i["item_id"] for i in warm["items"]} == {"b", "c"}


def test_events_arrive_in_kinesis(http: Http, stack, aws) -> None:
    user = unique("streamed")
    status, reply = http.post("/api/v1/event", {"user_id": user, "item_id": "item_50", "event_type": "view"})
    assert status == 202
    kinesis = aws("kinesis")
    stream = stack.outputs["StreamName"]
    found = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
                found += [
                    json.loads(r["Data"]) | {"key": r["PartitionKey"]}
                    for r in page["Records"]
                    if json.loads(r["Data"])["user_id"] == user
                ]
                iterator = page.get("NextShardIterator") if page["Records"] else None
    assert [(r["event_id"], r["key"], r["event_type"]) for r in found] == [(reply["event_id"], user, "view")]


def test_health_reports_every_component(http: Http) -> None:
    status, reply = http.get("/api/v1/health")
    assert status == 200 and reply["status"] == "healthy"
    assert {name: c["status"] for name, c in reply["components"].items()} == {
        "redis": "healthy",
        "s3": "healthy",
        "kinesis": "healthy",
    }


def test_metrics_answer_through_the_gateway(http: Http) -> None:
    http.post("/api/v1/event", {"user_id": unique("m"), "item_id": "i1", "event_type": "like"})
    status, reply = http.get("/api/v1/metrics")
    assert status == 200 and reply["events"]["like"] == 1
    assert reply["latency"]["POST /api/v1/event"]["count"] >= 1


def test_bad_requests_get_their_4xx_through_the_gateway(http: Http, stack_redis) -> None:
    status, reply = http.post("/api/v1/event", {"user_id": "u", "item_id": "i", "event_type": "teleport"})
    assert status == 422 and reply["errors"][0]["field"] == "event_type"
    status, reply = http.request("POST", "/api/v1/event", raw=b"{not json")
    assert status == 422 and reply["errors"][0]["field"] == "body"
    status, reply = http.post("/api/v1/recommend", {"user_id": "u", "num_recommendations": 1000})
    assert status == 422 and reply["errors"][0]["field"] == "num_recommendations"
    assert [k for k in stack_redis.keys("*") if not k.startswith("recloop:lat")] == []
    assert http.get("/api/v1/nowhere")[0] in (403, 404)


def test_swagger_ui_is_served(http: Http) -> None:
    status, page = http.get("/docs")
    assert status == 200 and "swagger" in page.lower()


def test_model_registry_routes_answer_through_the_gateway(http: Http) -> None:
    status, reply = http.get("/api/v1/mlops/models")
    assert status == 200 and reply["champion"] is None and reply["models"] == []
    status, reply = http.request("POST", "/api/v1/mlops/models/mf-nothing/promote", body={"reason": "e2e"})
    assert status == 404 and "mf-nothing" in reply["message"]
