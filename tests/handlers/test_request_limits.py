"""Oversized or malformed bodies are refused with a 4xx naming the problem, before anything is written.

Each case used to escape as a 5xx: Python's JSON parser fails on long integers and deep nesting (502), and a
context the stream cannot encode failed the stream write of its whole batch (503 "stream unavailable").
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from local.inprocess import ApiClient, LambdaContext
from recloop.adapters.redis import Keys
from recloop.handlers.http.request_body import MAX_BODY_BYTES, MAX_BODY_DEPTH, MAX_INTEGER_DIGITS
from recloop.handlers.http.schemas import MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH, MAX_CONTEXT_KEYS
from tests.handlers.test_http_api import stream_records

EVENT = '{"user_id": "u", "item_id": "i", "event_type": "click"'


def nested(levels: int, leaf: Any = 1) -> Any:
    """`levels` objects inside one another (a context nested that deep)."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def assert_nothing_written(aws: dict, redis_client: redis.Redis) -> None:
    assert stream_records(aws["kinesis"]) == []
    assert [k for k in redis_client.keys("*") if not k.startswith("recloop:lat")] == []


def assert_malformed(reply: Any, *words: str) -> None:
    assert reply["error"] == "malformed_body"
    assert all(word in reply["message"] for word in words), reply["message"]
    assert reply["errors"][0]["field"] and reply["errors"][0]["reason"]


def test_integer_longer_than_the_parser_takes_is_400(api: ApiClient, aws: dict, redis_client) -> None:
    raw = EVENT + ', "timestamp": ' + "1" * 5000 + "}"
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=raw)
    assert status == 400
    assert_malformed(reply, f"{MAX_INTEGER_DIGITS} digits")
    assert_nothing_written(aws, redis_client)


def test_integer_within_the_digit_limit_reaches_validation(api: ApiClient) -> None:
    raw = EVENT + ', "timestamp": ' + "1" * MAX_INTEGER_DIGITS + "}"
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=raw)
    assert status == 422 and reply["errors"][0]["field"] == "timestamp"


@pytest.mark.parametrize("levels", [1100, 100_000])
def test_body_nested_past_the_limit_is_400(api: ApiClient, aws: dict, redis_client, levels: int) -> None:
    raw = EVENT + ', "context": ' + "[" * levels + "]" * levels + "}"
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=raw)
    assert status == 400
    assert_malformed(reply, f"deeper than {MAX_BODY_DEPTH}")
    assert_nothing_written(aws, redis_client)


def test_brackets_inside_strings_do_not_count_as_nesting(api: ApiClient) -> None:
    raw = EVENT + ', "context": {"note": "' + "[{" * 2000 + '\\"]"}}'
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=raw)
    assert status == 202 and reply["status"] == "accepted"


def test_context_nested_900_deep_is_refused_and_its_batch_written_by_nobody(
    api: ApiClient, aws: dict, redis_client
) -> None:
    event = {"user_id": "u", "item_id": "i", "event_type": "click", "context": nested(900)}
    status, reply = api.request("event", "POST", "/api/v1/event", event)
    assert status == 400 and reply["error"] == "malformed_body"
    good = {"user_id": "u2", "item_id": "i2", "event_type": "view"}
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": [good, event]})
    assert status == 400 and reply["error"] == "malformed_body"
    assert_nothing_written(aws, redis_client)


@pytest.mark.parametrize(
    ("raw_context", "field"),
    [('{"k": "\\ud800"}', "context.k"), ('{"k": ["ok", "x\\udfff"]}', "context.k.1"), ('{"\\ud83d": 1}', "context")],
)
def test_lone_surrogate_is_400_naming_where(
    api: ApiClient, aws: dict, redis_client, raw_context: str, field: str
) -> None:
    status, reply = api.request("event", "POST", "/api/v1/event", raw_body=f'{EVENT}, "context": {raw_context}}}')
    assert status == 400
    assert_malformed(reply, "surrogate")
    assert reply["errors"][0]["field"] == field
    batch = '{"events": [{"user_id": "u2", "item_id": "i2", "event_type": "view"}, ' + EVENT
    batch += f', "context": {raw_context}}}]}}'
    status, reply = api.request("event", "POST", "/api/v1/events/batch", raw_body=batch)
    assert status == 400 and reply["errors"][0]["field"] == f"events.1.{field}"
    assert_nothing_written(aws, redis_client)


def test_a_proper_surrogate_pair_is_text(api: ApiClient, aws: dict) -> None:
    raw = EVENT + ', "context": {"mood": "\\ud83d\\ude00"}}'
    status, _ = api.request("event", "POST", "/api/v1/event", raw_body=raw)
    assert status == 202
    (record,) = stream_records(aws["kinesis"])
    assert record["context"] == {"mood": "\U0001f600"}


def test_invalid_utf8_is_400(api: ApiClient, aws: dict, redis_client) -> None:
    body = (EVENT + ', "context": {"k": "caf').encode() + b'\xe9"}}'
    status, reply = call_with_raw_event(api, "event", "/api/v1/event", base64.b64encode(body).decode())
    assert status == 400
    assert_malformed(reply, "UTF-8")
    assert_nothing_written(aws, redis_client)


def test_base64_body_that_is_valid_utf8_is_read(api: ApiClient) -> None:
    body = (EVENT + "}").encode()
    status, reply = call_with_raw_event(api, "event", "/api/v1/event", base64.b64encode(body).decode())
    assert status == 202 and reply["status"] == "accepted"


def call_with_raw_event(api: ApiClient, function: str, path: str, base64_body: str) -> tuple[int, Any]:
    """A request whose body API Gateway passed base64-encoded (a binary media type)."""
    event = json.loads(json.dumps(api.template))
    event.update(httpMethod="POST", path=path, resource=path, body=base64_body, isBase64Encoded=True)
    event["headers"] = {"Content-Type": "application/json"}
    event["multiValueHeaders"] = {"Content-Type": ["application/json"]}
    response = api.functions[function].lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_five_megabyte_body_is_413(api: ApiClient, redis_client: redis.Redis) -> None:
    body = {"user_id": "u", "context": {"k": "x" * 5_000_000}}
    status, reply = api.request("recommend", "POST", "/api/v1/recommend", body)
    assert status == 413
    assert reply["error"] == "body_too_large" and reply["limit_bytes"] == MAX_BODY_BYTES
    assert str(MAX_BODY_BYTES) in reply["message"]
    assert redis_client.hget(Keys.COUNTERS, "recommend:total") is None


def test_body_at_the_limit_is_read(api: ApiClient) -> None:
    events = [{"user_id": f"u{n}", "item_id": "i", "event_type": "view"} for n in range(500)]
    filler = "x" * (MAX_BODY_BYTES - len(json.dumps({"events": events, "pad": ""})))
    raw = json.dumps({"events": events, "pad": filler})
    assert len(raw.encode()) == MAX_BODY_BYTES
    status, reply = api.request("event", "POST", "/api/v1/events/batch", raw_body=raw)
    assert status == 422 and reply["errors"][0]["field"] == "pad"  # read and validated, not refused unread


CONTEXTS_THE_STREAM_CANNOT_CARRY = [
    pytest.param(nested(MAX_CONTEXT_DEPTH + 1), "levels", id="too-deep"),
    pytest.param({f"k{n}": n for n in range(MAX_CONTEXT_KEYS + 1)}, "keys", id="too-many-keys"),
    pytest.param(nested(3, {f"k{n}": n for n in range(MAX_CONTEXT_KEYS)}), "keys", id="too-many-nested-keys"),
    pytest.param({"k": "x" * MAX_CONTEXT_BYTES}, "bytes", id="too-large"),
    pytest.param({"k": "é" * (MAX_CONTEXT_BYTES // 2)}, "bytes", id="too-large-in-utf8"),
    pytest.param({"score": float("nan")}, "finite", id="nan"),
    pytest.param({"score": [float("inf")]}, "finite", id="infinity"),
    pytest.param({"k" * 200: 1}, "key", id="long-key"),
]


@pytest.mark.parametrize(("context", "word"), CONTEXTS_THE_STREAM_CANNOT_CARRY)
def test_event_context_the_stream_cannot_carry_is_422_naming_context(
    api: ApiClient, aws: dict, redis_client, context: dict, word: str
) -> None:
    event = {"user_id": "u", "item_id": "i", "event_type": "click", "context": context}
    status, reply = api.request("event", "POST", "/api/v1/event", event)
    assert status == 422
    (error,) = reply["errors"]
    assert error["field"] == "context" and word in error["reason"]
    assert_nothing_written(aws, redis_client)


@pytest.mark.parametrize(("context", "word"), CONTEXTS_THE_STREAM_CANNOT_CARRY)
def test_batch_event_with_such_a_context_is_rejected_alone(api: ApiClient, aws: dict, context: dict, word: str) -> None:
    good = {"user_id": "u1", "item_id": "i1", "event_type": "view"}
    bad = {"user_id": "u2", "item_id": "i2", "event_type": "click", "context": context}
    status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": [good, bad]})
    assert status == 207
    assert [r["status"] for r in reply["results"]] == ["accepted", "rejected"]
    assert reply["results"][1]["errors"][0]["field"] == "context"
    assert [r["user_id"] for r in stream_records(aws["kinesis"])] == ["u1"]


@pytest.mark.parametrize(("context", "word"), CONTEXTS_THE_STREAM_CANNOT_CARRY)
def test_recommend_context_is_bounded_like_an_events(
    api: ApiClient, redis_client: redis.Redis, context: dict, word: str
) -> None:
    status, reply = api.request("recommend", "POST", "/api/v1/recommend", {"user_id": "u", "context": context})
    assert status == 422
    assert reply["errors"][0]["field"] == "context" and word in reply["errors"][0]["reason"]
    assert redis_client.hget(Keys.COUNTERS, "recommend:total") is None


def test_context_within_every_bound_is_carried_to_the_stream(api: ApiClient, aws: dict) -> None:
    context = nested(MAX_CONTEXT_DEPTH - 2, {"device": "phone", "tags": ["a", None, True, 1.5]})
    status, _ = api.post_event(user_id="u", item_id="i", event_type="click", context=context)
    assert status == 202
    (record,) = stream_records(aws["kinesis"])
    assert record["context"] == context
    assert api.recommend("u", 1, context=context)[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/items", {"items": [{"item_id": "x", "title": "t" * 513}]}, "items.0.title"),
        ("/api/v1/items", {"items": [{"item_id": "x", "categories": ["c" * 65]}]}, "items.0.categories.0"),
        ("/api/v1/recommend", {"user_id": "u" * 129}, "user_id"),
        ("/api/v1/recommend", {"user_id": "u", "exclude_item_ids": ["i" * 129]}, "exclude_item_ids.0"),
    ],
)
def test_strings_are_bounded(api: ApiClient, path: str, body: dict, field: str) -> None:
    function = "recommend" if path.endswith("recommend") else "event"
    status, reply = api.request(function, "POST", path, body)
    assert status == 422 and reply["errors"][0]["field"] == field
