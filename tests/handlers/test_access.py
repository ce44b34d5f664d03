"""Who may do what through the API, in-process with the context API Gateway's authorizer passes: a user token acts
for its own user only, a service token for anyone and on the operator routes; a refusal writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from cfnlint.decode import decode

from local.inprocess import ApiClient, LambdaContext, load_function
from recloop.access.principal import Principal, Scope
from recloop.adapters.redis import Keys
from recloop.container import reset_container
from recloop.handlers.http.access import PUBLIC_ROUTES
from tests.support.environment import ROOT, TEST_STREAM
from tests.support.tokens import ALICE, SERVICE, create_signing_secret, token_for

BOB = Principal("bob", Scope.USER, "bob")
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/POST/api/v1/recommend"


def stream_records(kinesis: Any) -> list[dict[str, Any]]:
    shard = kinesis.describe_stream(StreamName=TEST_STREAM)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=TEST_STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]]


def data_keys(redis_client: redis.Redis) -> set[str]:
    """Every Redis key but the request-latency metrics (recorded for refused requests too)."""
    latency = {Keys.LATENCY_ENDPOINTS, *redis_client.keys(Keys.metrics_latency("*", "*"))}  # type: ignore[arg-type]
    return set(redis_client.keys()) - latency


def as_caller(api: ApiClient, principal: Principal) -> ApiClient:
    api.authorizer = principal.as_context()
    return api


def event(user_id: str, item_id: str = "item_1") -> dict[str, str]:
    return {"user_id": user_id, "item_id": item_id, "event_type": "click"}


@pytest.fixture
def token_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions as the template configures them with ApiAuth=token."""
    monkeypatch.setenv("AUTH_MODE", "token")
    reset_container()


# ---- a user token: its own user only ---------------------------------------------------------------------------------


def test_a_user_cannot_post_an_event_for_another_user(api: ApiClient, aws: dict, redis_client: redis.Redis) -> None:
    status, body = as_caller(api, ALICE).request("event", "POST", "/api/v1/event", event("bob"))
    assert status == 403
    assert body["error"] == "forbidden"
    assert body["errors"] == [
        {"field": "user_id", "reason": "names a user other than the one this caller's token is for"}
    ]
    assert stream_records(aws["kinesis"]) == []
    assert data_keys(redis_client) == set()


def test_one_foreign_event_refuses_the_whole_batch_before_anything_is_written(
    api: ApiClient, aws: dict, redis_client: redis.Redis
) -> None:
    batch = {"events": [event("alice"), event("bob"), event("alice", "item_2"), event("carol")]}
    status, body = as_caller(api, ALICE).request("event", "POST", "/api/v1/events/batch", batch)
    assert status == 403
    assert [e["field"] for e in body["errors"]] == ["events.1.user_id", "events.3.user_id"]
    assert body["message"].startswith("events.1.user_id: ")
    assert stream_records(aws["kinesis"]) == []
    assert data_keys(redis_client) == set()


def test_a_user_records_its_own_events(api: ApiClient, aws: dict, redis_client: redis.Redis) -> None:
    as_caller(api, ALICE)
    assert api.post_event(**event("alice"))[0] == 202
    status, body = api.request("event", "POST", "/api/v1/events/batch", {"events": [event("alice", "item_2")]})
    assert (status, body["accepted"]) == (202, 1)
    assert [r["user_id"] for r in stream_records(aws["kinesis"])] == ["alice", "alice"]
    assert redis_client.hkeys(Keys.user_items("alice")) == ["item_1", "item_2"]


def test_a_user_gets_recommendations_for_itself_only(api: ApiClient, redis_client: redis.Redis) -> None:
    as_caller(api, ALICE)
    status, body = api.recommend("bob")
    assert status == 403
    assert body["errors"][0]["field"] == "user_id"
    status, body = api.recommend("alice")
    assert (status, body["user_id"]) == (200, "alice")


SERVICE_ROUTES = [
    ("mlops", "GET", "/api/v1/mlops/models", None),
    ("mlops", "POST", "/api/v1/mlops/models/rollback", None),
    ("mlops", "GET", "/api/v1/mlops/online-learning/status", None),
    ("mlops", "POST", "/api/v1/mlops/online-learning/trigger", None),
    ("event", "POST", "/api/v1/items", {"items": [{"item_id": "item_1", "categories": ["a"]}]}),
]


@pytest.mark.parametrize("route", SERVICE_ROUTES, ids=[f"{method} {path}" for _, method, path, _ in SERVICE_ROUTES])
def test_operator_routes_and_the_catalogue_refuse_a_user_token(
    api: ApiClient, redis_client: redis.Redis, route: tuple[str, str, str, Any]
) -> None:
    status, reply = as_caller(api, ALICE).request(*route)
    assert (status, reply["error"]) == (403, "forbidden")
    assert "scope service" in reply["message"]
    assert data_keys(redis_client) == set()


# ---- a service token: any user, and the operator routes --------------------------------------------------------


def test_a_service_acts_for_any_user(api: ApiClient, aws: dict) -> None:
    as_caller(api, SERVICE)
    batch = {"events": [event("alice"), event("bob")]}
    assert api.request("event", "POST", "/api/v1/events/batch", batch)[0] == 202
    assert api.post_event(**event("carol"))[0] == 202
    assert [r["user_id"] for r in stream_records(aws["kinesis"])] == ["alice", "bob", "carol"]
    status, body = api.recommend("bob")
    assert (status, body["user_id"]) == (200, "bob")


def test_a_service_operates(api: ApiClient) -> None:
    as_caller(api, SERVICE)
    status, body = api.request("mlops", "GET", "/api/v1/mlops/models")
    assert (status, body["count"]) == (200, 0)
    items = {"items": [{"item_id": "item_1", "categories": ["a"]}]}
    assert api.request("event", "POST", "/api/v1/items", items)[0] == 200


# ---- with authentication on, no principal: only the public routes ----------------------------------------------------


def test_without_a_principal_only_the_public_routes_answer(api: ApiClient, token_auth: None, aws: dict) -> None:
    status, body = api.post_event(**event("alice"))
    assert (status, body["error"]) == (401, "unauthenticated")
    assert api.recommend("alice")[0] == 401
    assert api.request("mlops", "GET", "/api/v1/mlops/models")[0] == 401
    assert stream_records(aws["kinesis"]) == []
    assert api.request("ops", "GET", "/api/v1/metrics")[0] == 200
    assert api.request("ops", "GET", "/api/v1/health")[0] in (200, 503)  # answered, whatever the components say
    assert api.request("ops", "GET", "/docs")[0] == 200
    assert api.request("ops", "GET", "/redoc")[0] == 200
    assert api.request("ops", "GET", "/api/v1/dashboard")[0] == 200  # its scripts then need credentials


def test_a_context_that_names_no_valid_principal_is_unauthenticated(api: ApiClient) -> None:
    api.authorizer = {"principal": "alice", "scope": "superuser", "user_id": "alice"}
    assert api.recommend("alice")[0] == 401


def test_with_authentication_on_a_principal_is_still_bound_to_its_user(api: ApiClient, token_auth: None) -> None:
    as_caller(api, BOB)
    assert api.recommend("bob")[0] == 200
    assert api.recommend("alice")[0] == 403


# ---- from token to route: the authorizer's answer is what the routes check -------------------------------------------


def test_the_authorizers_context_binds_the_route_to_the_tokens_user(
    api: ApiClient, token_auth: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SIGNING_SECRET_ARN", create_signing_secret())
    reset_container()
    authorizer = load_function("authorizer").lambda_handler
    answer = authorizer(
        {"type": "TOKEN", "authorizationToken": f"Bearer {token_for(ALICE)}", "methodArn": METHOD_ARN},
        LambdaContext(),
    )
    api.authorizer = answer["context"]
    assert api.recommend("alice")[0] == 200
    assert api.recommend("bob")[0] == 403


# ---- the template and the code agree on what is public --------------------------------------------------------------


def test_the_template_opens_exactly_the_public_routes_and_gives_every_other_one_the_authorizer() -> None:
    template, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    assert template["Resources"]["RestApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "ClientToken"
    authorizers: dict[str, str] = {}
    for resource in template["Resources"].values():
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if event.get("Type") == "Api":
                route = event["Properties"]
                authorizers[route["Path"]] = (route.get("Auth") or {}).get("Authorizer", "ClientToken")
    assert {path for path, authorizer in authorizers.items() if authorizer == "NONE"} == PUBLIC_ROUTES
    assert {authorizer for path, authorizer in authorizers.items() if path not in PUBLIC_ROUTES} == {"ClientToken"}


def test_only_the_local_profile_turns_the_functions_caller_checks_off() -> None:
    """The checks follow DeploymentProfile, not ApiAuth: LocalStack evaluates an empty ApiAuth as its default in
    Conditions, so a local stack would answer 401; and no other profile ever runs without them."""
    template, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    auth_mode = template["Globals"]["Function"]["Environment"]["Variables"]["AUTH_MODE"]
    assert auth_mode == {"Fn::If": ["IsLocalProfile", "none", "token"]}
    assert template["Conditions"]["IsLocalProfile"] == {"Fn::Equals": [{"Ref": "DeploymentProfile"}, "local"]}
