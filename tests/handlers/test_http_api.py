"""Handlers called in-process with API Gateway proxy events, over real Redis and moto AWS."""

import json
from itertools import pairwise
from typing import Any

import pytest
import redis

from local.inprocess import ApiClient
from recloop.adapters.redis import Keys
from tests.support.environment import TEST_STREAM


def stream_records(kinesis: Any) -> list[dict[str, Any]]:
    shard = kinesis.describe_stream(StreamName=TEST_STREAM)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=TEST_STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return [{"key": r["PartitionKey"], **json.loads(r["Data"])} for r in records]


def test_guide_event_is_accepted_streamed_and_featured(api: ApiClient, aws: dict, redis_client: redis.Redis) -> None:
    status, body = api.post_event(user_id="user_123", item_id="item_50", event_type="click")
    assert status == 202
    assert body["status"] == "accepted" and body["features_updated"] is True
    (record,) = stream_records(aws["kinesis"])
    assert record["key"] == "user_123"
    assert record["event_id"] == body["event_id"]
    assert (record["user_id"], record["item_id"], record["event_type"]) == ("user_123", "item_50", "click")
    assert redis_client.hget(Keys.user_items("user_123"), "item_50") == "0.6"


def test_next_recommendation_reflects_the_event(api: ApiClient) -> None:
    for n in range(3):
        for item in ("a", "b", "c"):
            api.post_event(user_id=f"fan{n}", item_id=item, event_type="like")
    for n in range(5):
        for item in ("x", "y"):
            api.post_event(user_id=f"crowd{n}", item_id=item, event_type="purchase")

    status, cold = api.recommend("user_123", 2)
    assert status == 200 and cold["cold_start"] is True and cold["model_version"] == "trending"
    assert {i["item_id"] for i in cold["items"]} == {"x", "y"}
    assert cold["recommendation_id"].startswith("rec_")

    api.post_event(user_id="user_123", item_id="a", event_type="click")
    status, warm = api.recommend("user_123", 2)
    assert warm["cold_start"] is False and warm["model_version"] == "cooccurrence"
    assert {i["item_id"] for i in warm["items"]} == {"b", "c"}
    assert all(set(i) == {"item_id", "score", "rank"} for i in warm["items"])


def test_client_retry_with_same_event_id_counts_once(api: ApiClient, redis_client: redis.Redis) -> None:
    first = api.post_event(user_id="u", item_id="i", event_type="view", event_id="client-42")
    second = api.post_event(user_id="u", item_id="i", event_type="view", event_id="client-42")
    assert first[1]["status"] == "accepted" and second[1]["status"] == "duplicate"
    assert redis_client.hget(Keys.item_features("i"), "cnt:view") == "1"


BAD_EVENTS = [
    ({"user_id": "u", "item_id": "i", "event_type": "share"}, "event_type"),
    ({"user_id": "", "item_id": "i", "event_type": "click"}, "user_id"),
    ({"user_id": "u", "item_id": "i" * 200, "event_type": "click"}, "item_id"),
    ({"user_id": 17, "item_id": "i", "event_type": "click"}, "user_id"),
    ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": "yesterday"}, "timestamp"),
    ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": float("nan")}, "timestamp"),
    ({"user_id": "u", "item_id": "i", "event_type": "click", "timestamp": float("inf")}, "timestamp"),
    ({"item_id": "i", "event_type": "click"}, "user_id"),
    (["not", "an", "object"], "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_EVENTS)
def test_bad_event_gets_422_naming_the_field_and_writes_nothing(
    api: ApiClient, aws: dict, redis_client: redis.Redis, body: Any, field: str
) -> None:
    status, reply = api.request("event", "POST", "/api/v1/event", body)
    assert status == 422
    assert reply["error"] == "validation_error"
    assert field in {e["field"] for e in reply["errors"]}
    assert all(e["reason"] for e in reply["errors"])
    assert stream_records(aws["kinesis"]) == []
    assert [k for k in redis_client.keys("*") if not k.startswith("recloop:lat")] == []


def test_non_json_body_is_a_clear_422(api: ApiClient, redis_client: redis.Redis) -> None:
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body="user_id=u&item_id=i")
    assert status == 422
    assert reply["errors"][0]["field"] == "body" and "JSON" in reply["errors"][0]["reason"]


def test_json_sent_without_a_json_content_type_is_read_as_json(api: ApiClient) -> None:
    # `curl -d '{...}'` without -H labels the body application/x-www-form-urlencoded.
    body = '{"user_id": "u", "item_id": "i", "event_type": "click"}'
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=body, headers=form)
    assert status == 202 and reply["status"] == "accepted"


@pytest.mark.parametrize("count", [0, 101, "ten"])
def test_num_recommendations_out_of_range(api: ApiClient, redis_client: redis.Redis, count: Any) -> None:
    status, reply = api.request(
        "recommend", "POST", "/api/v1/recommend", {"user_id": "u", "num_recommendations": count}
    )
    assert status == 422
    assert reply["errors"][0]["field"] == "num_recommendations"
    assert redis_client.hget(Keys.COUNTERS, "recommend:total") is None


def test_batch_reports_each_event_and_writes_only_the_valid(api: ApiClient, aws: dict, redis_client) -> None:
    events = [
        {"user_id": "u1", "item_id": "i1", "event_type": "like"},
        {"user_id": "u1", "item_id": "i2", "event_type": "teleport"},
        {"user_id": "u2", "item_id": "i1", "event_type": "purchase", "timestamp": 1_700_000_000},
    ]
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": events})
    assert status == 207
    assert (reply["accepted"], reply["rejected"], reply["failed"]) == (2, 1, 0)
    assert [r["status"] for r in reply["results"]] == ["accepted", "rejected", "accepted"]
    assert reply["results"][1]["errors"][0]["field"] == "event_type"
    assert [(r["user_id"], r["item_id"]) for r in stream_records(aws["kinesis"])] == [("u1", "i1"), ("u2", "i1")]
    assert redis_client.hkeys(Keys.user_items("u1")) == ["i1"]


def test_fully_valid_batch_is_202_and_all_invalid_is_422(api: ApiClient) -> None:
    ok = [{"user_id": f"u{n}", "item_id": "i", "event_type": "view"} for n in range(500)]
    assert api.request("event", "POST", "/api/v1/events/batch", {"events": ok})[0] == 202
    bad = [{"user_id": "u", "item_id": "i", "event_type": "nope"}]
    assert api.request("event", "POST", "/api/v1/events/batch", {"events": bad})[0] == 422


def test_batch_over_500_is_refused_whole(api: ApiClient, aws: dict) -> None:
    events = [{"user_id": "u", "item_id": "i", "event_type": "view"}] * 501
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": events})
    assert status == 422
    assert reply["errors"][0]["field"] == "events" and "500" in reply["errors"][0]["reason"]
    assert stream_records(aws["kinesis"]) == []


def test_stream_down_means_503_and_nothing_written(api: ApiClient, aws: dict, redis_client) -> None:
    aws["kinesis"].delete_stream(StreamName=TEST_STREAM)
    status, reply = api.post_event(user_id="u", item_id="i", event_type="click")
    assert status == 503 and reply["error"] == "stream_unavailable"
    assert redis_client.exists(Keys.user_items("u"), Keys.item_features("i"), Keys.POPULARITY) == 0


def test_redis_down_after_stream_keeps_the_event_durable(api: ApiClient, aws: dict, monkeypatch) -> None:
    from recloop.container import get_container

    services = get_container()
    monkeypatch.setattr(services.store, "apply_many", _raise_connection_error)
    status, reply = api.post_event(user_id="u", item_id="i", event_type="click")
    assert status == 202 and reply["features_updated"] is False
    assert [r["event_id"] for r in stream_records(aws["kinesis"])] == [reply["event_id"]]


def _raise_connection_error(*_: Any, **__: Any) -> None:
    raise redis.ConnectionError("connection refused")


def test_recommend_degrades_to_last_known_popular_items_when_redis_fails(api: ApiClient, monkeypatch) -> None:
    from recloop.container import get_container

    api.post_event(user_id="u1", item_id="hit", event_type="purchase")
    assert api.recommend("someone", 1)[1]["items"][0]["item_id"] == "hit"
    recommender = get_container().recommender
    monkeypatch.setattr(recommender.store, "user_profile", _raise_connection_error)
    status, reply = api.recommend("someone", 1)
    assert status == 200 and reply["degraded"] is True and reply["items"][0]["item_id"] == "hit"

    monkeypatch.setattr(recommender.popularity_cache, "_items", [])
    monkeypatch.setattr(recommender.trending_cache, "_items", [])
    status, reply = api.recommend("someone", 1)
    assert status == 503 and reply["error"] == "feature_store_unavailable"


def test_items_upsert_then_filter_by_category(api: ApiClient) -> None:
    status, reply = api.request(
        "event",
        "POST",
        "/api/v1/items",
        {
            "items": [
                {"item_id": "film1", "categories": ["Drama"], "title": "One"},
                {"item_id": "film2", "categories": ["Comedy"]},
            ]
        },
    )
    assert (status, reply) == (200, {"upserted": 2})
    status, reply = api.recommend("u", 5, categories=["Comedy"])
    assert [i["item_id"] for i in reply["items"]] == ["film2"]
    bad = api.request("event", "POST", "/api/v1/items", {"items": [{"item_id": "x", "categories": ["a|b"]}]})
    assert bad[0] == 422 and bad[1]["errors"][0]["field"] == "items.0.categories.0"


def test_health_reports_each_component(api: ApiClient, aws: dict) -> None:
    status, reply = api.request("ops", "GET", "/api/v1/health")
    assert status == 200 and reply["status"] == "healthy"
    assert set(reply["components"]) == {"redis", "s3", "kinesis"}
    aws["kinesis"].delete_stream(StreamName=TEST_STREAM)
    status, reply = api.request("ops", "GET", "/api/v1/health")
    assert status == 200 and reply["status"] == "degraded"
    assert reply["components"]["kinesis"]["status"] == "unhealthy" and reply["components"]["kinesis"]["error"]
    assert reply["components"]["redis"]["status"] == "healthy"


def test_health_is_503_without_redis(api: ApiClient, monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    from recloop.container import reset_container

    reset_container()
    status, reply = api.request("ops", "GET", "/api/v1/health")
    assert status == 503 and reply["status"] == "unhealthy"
    assert reply["components"]["redis"]["status"] == "unhealthy"


def test_metrics_aggregate_latency_counts_and_rates(api: ApiClient) -> None:
    api.post_event(user_id="u", item_id="i", event_type="click")
    api.post_event(user_id="u", item_id="j", event_type="like")
    api.recommend("u", 3)
    api.recommend("newcomer", 3)
    status, reply = api.request("ops", "GET", "/api/v1/metrics")
    assert status == 200
    assert reply["events"]["click"] == 1 and reply["events"]["like"] == 1 and reply["events_total"] == 2
    assert reply["recommendations_total"] == 2 and reply["cold_start_rate"] == 0.5
    event_latency = reply["latency"]["POST /api/v1/event"]
    assert event_latency["count"] == 2 and 0 < event_latency["p50_ms"] <= event_latency["p99_ms"]
    assert reply["latency"]["POST /api/v1/recommend"]["count"] == 2
    assert 0.0 <= reply["cache_hit_rate"] <= 1.0


def test_metrics_history_gives_the_hour_minute_by_minute(api: ApiClient) -> None:
    api.post_event(user_id="u", item_id="i", event_type="click")
    api.post_event(user_id="u", item_id="j", event_type="purchase")
    api.recommend("u", 3)
    status, plain = api.request("ops", "GET", "/api/v1/metrics")
    assert status == 200 and plain["history"] is None
    status, reply = api.request("ops", "GET", "/api/v1/metrics", query={"history": "true"})
    assert status == 200
    history = reply["history"]
    minutes = history["minutes"]
    assert len(minutes) == reply["window_minutes"] == 60
    assert all(later - earlier == 60 for earlier, later in pairwise(minutes))
    assert history["events"]["click"][-1] + history["events"]["click"][-2] == 1  # a minute may turn meanwhile
    assert sum(history["events"]["purchase"]) == 1 and sum(history["events"]["like"]) == 0
    recommend = history["latency"]["POST /api/v1/recommend"]
    assert sum(recommend["count"]) == 1
    (p99,) = [value for value in recommend["p99_ms"] if value is not None]
    assert p99 == reply["latency"]["POST /api/v1/recommend"]["p99_ms"]
    assert recommend["p50_ms"][0] is None  # nothing an hour ago


def test_swagger_ui_and_openapi_cover_every_route(api: ApiClient) -> None:
    status, html = api.request("ops", "GET", "/docs")
    assert status == 200 and "swagger" in html.lower()
    event = api.template
    assert event  # the sample events/ file is a real API Gateway proxy event
    spec = api.functions["ops"].app.get_openapi_schema()
    paths = set(spec.paths)
    assert {
        "/api/v1/event",
        "/api/v1/events/batch",
        "/api/v1/items",
        "/api/v1/recommend",
        "/api/v1/health",
        "/api/v1/metrics",
    } <= paths


def test_the_openapi_server_is_wherever_the_document_was_read(api: ApiClient) -> None:
    """Swagger's "Try it out" resolves the server against the document's URL: behind the local proxy
    (http://localhost:8000/docs) and on the stage URL (https://.../v1/docs) alike. A stage path (/v1) would
    send the local proxy's requests to /v1/api/v1/..., which answer 403."""
    status, spec = api.request("ops", "GET", "/docs", query={"format": "json"})
    assert status == 200
    assert [server["url"] for server in spec["servers"]] == ["."]


def test_unknown_route_is_404(api: ApiClient) -> None:
    assert api.request("event", "POST", "/api/v1/nowhere", {})[0] == 404


def test_bad_configuration_fails_the_cold_start(env: dict, monkeypatch) -> None:
    from local.inprocess import load_function
    from recloop.container import reset_container
    from recloop.core.settings import SettingsError

    monkeypatch.setenv("ONLINE_LEARNING_BATCH_SIZE", "zero")
    reset_container()
    with pytest.raises(SettingsError, match="ONLINE_LEARNING_BATCH_SIZE"):
        load_function("recommend")
