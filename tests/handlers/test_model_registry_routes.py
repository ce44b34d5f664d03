"""Model registry routes through the API resolver, with API Gateway proxy events, over moto S3 and real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from local.inprocess import LambdaContext
from recloop.adapters.redis import Keys
from recloop.handlers.http import model_registry
from recloop.handlers.http.resolver import build_resolver
from recloop.models.bundle import ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.champion import ChampionPointer
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import EVENTS_DIR, TEST_BUCKET
from tests.support.registry import fake_popularity_loader, make_bundle, s3_pointer

MODELS = "/api/v1/mlops/models"


class ModelsApi:
    """The models router in a resolver, called with proxy events built from events/event/record_a_click.json."""

    def __init__(self) -> None:
        self.app = build_resolver(model_registry.router)
        self.template = json.loads((EVENTS_DIR / "event" / "record_a_click.json").read_text())

    def call(
        self,
        method: str,
        path: str,
        *,
        resource: str | None = None,
        path_parameters: dict[str, str] | None = None,
        body: Any = None,
        raw_body: str | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        event = json.loads(json.dumps(self.template))
        event.update(
            httpMethod=method,
            path=path,
            resource=resource or path,
            pathParameters=path_parameters,
            queryStringParameters=query,
            multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
            body=raw_body if raw_body is not None else (None if body is None else json.dumps(body)),
        )
        event["requestContext"].update(httpMethod=method, resourcePath=resource or path, path=f"/v1{path}")
        response = self.app.resolve(event, LambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def list(self, history: int | None = None) -> tuple[int, Any]:
        return self.call("GET", MODELS, query=None if history is None else {"history": str(history)})

    def get(self, version: str) -> tuple[int, Any]:
        return self.call(
            "GET", f"{MODELS}/{version}", resource=f"{MODELS}/{{version}}", path_parameters={"version": version}
        )

    def promote(self, version: str, body: Any = None, raw_body: str | None = None) -> tuple[int, Any]:
        return self.call(
            "POST",
            f"{MODELS}/{version}/promote",
            resource=f"{MODELS}/{{version}}/promote",
            path_parameters={"version": version},
            body=body,
            raw_body=raw_body,
        )

    def rollback(self, body: Any = None) -> tuple[int, Any]:
        return self.call("POST", f"{MODELS}/rollback", body=body)


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, loaders: None) -> ModelRegistry:
    """Registry built the way the routes build theirs (settings, moto S3, the test Redis)."""
    return model_registry.get_registry()


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    monkeypatch.delitem(LOADERS, ModelKind.LGBM, raising=False)


@pytest.fixture
def api(registry: ModelRegistry) -> ModelsApi:
    return ModelsApi()


def test_get_registry_uses_the_configured_bucket_and_redis(registry: ModelRegistry) -> None:
    assert registry.objects.bucket == TEST_BUCKET and registry.champion_pointer.cache.redis is not None


def test_empty_registry_lists_nothing(api: ModelsApi) -> None:
    assert api.list() == (200, {"champion": None, "count": 0, "models": [], "champion_history": None})
    assert api.list(history=5)[1]["champion_history"] == []


def test_list_shows_versions_newest_first_and_the_champion(api: ModelsApi, registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1", created_at="2026-11-01T00:00:00+00:00", metrics={"hit_rate": 0.2}))
    registry.register(make_bundle("mf-2", kind=ModelKind.MF, created_at="2026-11-02T00:00:00+00:00"))
    registry.promote("pop-1", "bootstrap")

    status, body = api.list()
    assert status == 200
    assert body["count"] == 2
    assert [(m["version"], m["kind"], m["is_champion"]) for m in body["models"]] == [
        ("mf-2", "mf", False),
        ("pop-1", "popularity", True),
    ]
    assert body["models"][1]["metrics"] == {"hit_rate": 0.2}
    assert body["champion"]["version"] == "pop-1" and body["champion"]["reason"] == "bootstrap"


def test_get_one_version(api: ModelsApi, registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1", hyperparameters={"half_life_hours": 168}))
    status, body = api.get("pop-1")
    assert status == 200
    assert body["version"] == "pop-1" and body["kind"] == "popularity" and body["is_champion"] is False
    assert body["hyperparameters"] == {"half_life_hours": 168}
    assert set(body["files"]) == {"items.json", "vectors/items.bin"}


def test_unknown_version_is_a_404_naming_it(api: ModelsApi) -> None:
    for status, body in (api.get("mf-nope"), api.promote("mf-nope")):
        assert status == 404
        assert body["error"] == "model_not_found" and body["version"] == "mf-nope"
        assert "mf-nope" in body["message"]


def test_malformed_version_is_a_422_naming_the_field(api: ModelsApi) -> None:
    status, body = api.get("-bad")
    assert status == 422
    assert body["errors"][0]["field"] == "version"


def test_promote_then_rollback(api: ModelsApi, registry: ModelRegistry, aws: dict, redis_client) -> None:
    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("pop-2"))

    status, body = api.promote("pop-1")  # no body: a default reason
    assert status == 200 and body["status"] == "promoted"
    assert body["champion"]["version"] == "pop-1" and body["champion"]["previous_version"] is None
    assert body["champion"]["reason"]

    status, body = api.promote("pop-2", {"reason": "won the A/B test"})
    assert status == 200
    assert body["champion"] | {"promoted_at": None} == {
        "version": "pop-2",
        "previous_version": "pop-1",
        "promoted_at": None,
        "reason": "won the A/B test",
    }
    assert s3_pointer(aws["s3"]).version == "pop-2"
    assert ChampionPointer.model_validate_json(redis_client.get(Keys.CHAMPION_CACHE)).version == "pop-2"

    status, body = api.promote("pop-2", {"reason": "retry"})
    assert status == 200 and body["status"] == "already_champion"
    assert body["champion"]["reason"] == "won the A/B test"

    status, body = api.rollback({"reason": "conversions fell"})
    assert status == 200 and body["status"] == "rolled_back"
    assert (body["champion"]["version"], body["champion"]["previous_version"]) == ("pop-1", "pop-2")
    assert body["champion"]["reason"] == "conversions fell"
    assert registry.champion().version == "pop-1"
    assert api.get("pop-1")[1]["is_champion"] is True

    status, body = api.list(history=2)  # the newest two of the three changes
    assert status == 200 and body["champion"]["version"] == "pop-1"
    assert [(c["action"], c["version"], c["previous_version"], c["reason"]) for c in body["champion_history"]] == [
        ("rollback", "pop-1", "pop-2", "conversions fell"),
        ("promote", "pop-2", "pop-1", "won the A/B test"),
    ]
    assert api.list(history=51)[0] == 422  # each change is one read: the route bounds them


def test_rollback_without_previous_is_a_409(api: ModelsApi, registry: ModelRegistry) -> None:
    status, body = api.rollback()
    assert status == 409 and body["error"] == "no_previous_version"
    registry.register(make_bundle("pop-1"))
    api.promote("pop-1")
    status, body = api.rollback({"reason": "nothing before it"})
    assert status == 409 and "pop-1" in body["message"]
    assert registry.champion().version == "pop-1"


@pytest.mark.parametrize("incompatible", [False, True], ids=["corrupt", "incompatible"])
def test_unservable_version_is_a_409_and_the_champion_stays(
    api: ModelsApi, registry: ModelRegistry, aws: dict, incompatible: bool
) -> None:
    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("bad-2", kind=ModelKind.LGBM) if incompatible else make_bundle("bad-2"))
    champion = registry.promote("pop-1", "baseline")
    if not incompatible:
        aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/bad-2/items.json", Body=b"tampered")

    status, body = api.promote("bad-2", {"reason": "ship it"})
    assert status == 409
    assert body["error"] == "model_not_servable" and body["version"] == "bad-2"
    assert "bad-2" in body["message"] and "unchanged" in body["message"]
    assert "/" not in body["message"] and "Error:" not in body["message"]  # what failed inside is logged, not shown
    assert s3_pointer(aws["s3"]) == champion
    assert api.list()[1]["champion"]["version"] == "pop-1"


@pytest.mark.parametrize(
    ("body", "raw"),
    [({"reason": ""}, None), ({"reason": 5}, None), ({"why": "x"}, None), ({"reason": "x" * 501}, None), (None, "{")],
)
def test_bad_promote_body_is_a_422_and_changes_nothing(
    api: ModelsApi, registry: ModelRegistry, body: Any, raw: str | None
) -> None:
    registry.register(make_bundle("pop-1"))
    status, reply = api.promote("pop-1", body, raw_body=raw)
    assert status == 422 and reply["error"] == "validation_error"
    assert reply["errors"][0]["field"].startswith(("reason", "why", "body"))
    assert registry.champion(use_cache=False) is None


def test_registry_unreachable_is_a_503(api: ModelsApi, aws: dict) -> None:
    aws["s3"].delete_bucket(Bucket=TEST_BUCKET)
    status, body = api.list()
    assert status == 503 and body["error"] == "registry_unavailable"
