"""An experiment end to end: two versions in the stack's registry, the guide's experiment created and started
through the API, recommend answering from both variants, conversions posted with and without `recommendation_id`
attributed on the event path, the results read through the API, then the experiment stopped."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from local.runtime import RunningStack
from recloop.adapters.objects import ObjectStore
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.registry.model_registry import ModelRegistry
from tests.e2e.conftest import Http
from tests.e2e.test_online_learning import wait_for
from tests.support.learning import trained

pytestmark = pytest.mark.e2e

EXPERIMENTS = "/api/v1/mlops/experiments"
# The users the small MF knows (tests.support.learning.trained): each gets a personal list.
USERS = [f"user{n}" for n in range(40)]


@pytest.fixture(autouse=True)
def empty_registry_and_experiments_after(stack: RunningStack, aws: Any) -> Iterator[None]:
    """Other tests expect no versions, no champion and no experiment: remove what this test wrote."""
    yield
    s3, bucket = aws("s3"), stack.outputs["BucketName"]
    for prefix in ("models/", "checkpoints/", "experiments/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


def register_two_versions(stack: RunningStack, aws: Any, stack_redis: Any) -> tuple[str, str]:
    """Two small MF versions in the stack's registry, the first of them champion."""
    registry = ModelRegistry(ObjectStore(aws("s3"), stack.outputs["BucketName"]), stack_redis)
    mf, history = trained()
    versions = []
    for name in ("control", "challenger"):
        version = f"mf-e2e-{name}-{uuid.uuid4().hex[:8]}"
        metadata = ModelMetadata(version=version, kind=ModelKind.MF)
        metadata.data_window.end = history[-1].timestamp
        registry.register(mf.to_bundle(metadata))
        versions.append(version)
    registry.promote(versions[0], reason="e2e champion")
    return versions[0], versions[1]


def guide_body(control: str, challenger: str) -> dict[str, Any]:
    """The guide's create-experiment body, naming versions of this registry."""
    return {
        "name": "LightGBM vs Neural CF",
        "description": "Compare traditional vs deep learning approach",
        "variants": [
            {"name": "champion", "model_path": "/app/models/lgbm_v1.pkl", "model_version": control},
            {"name": "challenger", "model_path": "/app/models/neural_cf_v2.pkl", "model_version": challenger},
        ],
        "allocation_strategy": "thompson_sampling",
        "traffic_percentage": 50.0,
    }


def warm_up(http: Http, champion: str) -> None:
    """One recent like per user (fewer than the online buffer holds: no online update), so each user has a history
    to rank for; then wait until the champion serves (instances check it every few seconds)."""
    events = [
        {"user_id": user, "item_id": f"{'ab'[n % 2]}{n % 6}", "event_type": "like", "event_id": f"e2e-warm-{user}"}
        for n, user in enumerate(USERS)
    ]
    status, reply = http.post("/api/v1/events/batch", {"events": events})
    assert (status, reply["accepted"]) == (202, len(events)), reply

    def champion_serves() -> bool:
        code, body = http.post("/api/v1/recommend", {"user_id": USERS[0], "num_recommendations": 5})
        assert code == 200, body
        return body["model_version"] == champion and bool(body["items"])

    wait_for(champion_serves, "the champion serving", timeout=30)


def recommend_to_every_user(http: Http) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each user's recommendation, by the variant that served it; those served outside the experiment."""
    served: dict[str, list[dict[str, Any]]] = {"champion": [], "challenger": []}
    outside = []
    for user in USERS:
        code, body = http.post("/api/v1/recommend", {"user_id": user, "num_recommendations": 5})
        assert code == 200, body
        if body["experiment_id"] is None:
            outside.append(body)
        else:
            served[body["variant"]].append(body)
    return served, outside


def post_outcomes(http: Http, served: dict[str, list[dict[str, Any]]]) -> Counter[str]:
    """Per variant: a click naming its recommendation (sent twice, as a client retry: it counts once), a purchase
    credited to the user's latest impression that showed the item, and a dislike (a negative outcome). The
    conversions each variant should count."""
    expected = Counter[str]()
    for variant, lists in served.items():
        named = lists[0]
        click = {
            "user_id": named["user_id"],
            "item_id": named["items"][0]["item_id"],
            "event_type": "click",
            "recommendation_id": named["recommendation_id"],
            "event_id": f"e2e-click-{uuid.uuid4().hex}",
        }
        for _ in range(2):
            assert http.post("/api/v1/event", click)[0] == 202
        expected[variant] += 1
        unnamed = lists[-1]
        for item, kind in ((unnamed["items"][-1]["item_id"], "purchase"), (unnamed["items"][0]["item_id"], "dislike")):
            event = {"user_id": unnamed["user_id"], "item_id": item, "event_type": kind}
            assert http.post("/api/v1/event", event)[0] == 202
        expected[variant] += 1
    return expected


def test_an_experiment_serves_both_variants_counts_attributed_conversions_and_stops(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any
) -> None:
    control, challenger = register_two_versions(stack, aws, stack_redis)
    version_of = {"champion": control, "challenger": challenger}
    warm_up(http, control)

    code, created = http.post(EXPERIMENTS, guide_body(control, challenger))
    assert code == 201 and created["status"] == "draft", created
    experiment_id = created["experiment_id"]
    code, started = http.post(f"{EXPERIMENTS}/{experiment_id}/start", None)
    assert code == 200 and started["status"] == "running", started
    code, listed = http.get(EXPERIMENTS)
    assert code == 200 and [(e["experiment_id"], e["status"]) for e in listed["experiments"]] == [
        (experiment_id, "running")
    ]

    served, outside = recommend_to_every_user(http)
    for variant, lists in served.items():
        assert all(body["experiment_id"] == experiment_id and body["items"] for body in lists), lists
        assert {body["model_version"] for body in lists} <= {version_of[variant]}
    # traffic_percentage 50: some users stay with the champion outside the experiment, both variants serve the rest.
    assert served["champion"] and served["challenger"] and outside, {k: len(v) for k, v in served.items()}
    assert all(body["model_version"] == control and body["variant"] is None for body in outside)

    expected = post_outcomes(http, served)
    # Outside the experiment: an event on the champion's list is no outcome of any variant.
    stray = {"user_id": outside[0]["user_id"], "item_id": outside[0]["items"][0]["item_id"], "event_type": "like"}
    assert http.post("/api/v1/event", stray)[0] == 202

    def counted() -> dict[str, Any] | None:
        code, results = http.get(f"{EXPERIMENTS}/{experiment_id}")
        assert code == 200, results
        arms = {v["name"]: v for v in results["variants"]}
        return results if all(arms[name]["conversions"] == expected[name] for name in served) else None

    results = wait_for(counted, "the posted conversions counted", timeout=60)
    assert results["status"] == "running" and results["allocation_strategy"] == "thompson_sampling"
    for arm in results["variants"]:
        lists = served[arm["name"]]
        assert arm["model_version"] == version_of[arm["name"]]
        assert (arm["impressions"], arm["conversions"], arm["negatives"]) == (len(lists), expected[arm["name"]], 1)
        assert arm["conversion_rate"] == pytest.approx(expected[arm["name"]] / len(lists))
        assert arm["avg_latency_ms"] is not None and arm["avg_latency_ms"] > 0
    assert results["total_impressions"] == sum(len(lists) for lists in served.values())
    assert results["total_conversions"] == sum(expected.values())
    assert results["winning_variant"] is None and results["decided"] is False  # a handful of events decide nothing

    code, final = http.post(f"{EXPERIMENTS}/{experiment_id}/stop", None)
    assert code == 200 and final["status"] == "stopped", final
    assert final["total_impressions"] == results["total_impressions"]
    assert final["total_conversions"] == results["total_conversions"]

    def champion_serves() -> dict[str, Any] | None:
        code, body = http.post("/api/v1/recommend", {"user_id": served["challenger"][0]["user_id"]})
        assert code == 200, body
        return body if body["experiment_id"] is None else None

    # Instances re-read the running experiments every few seconds.
    assert wait_for(champion_serves, "the champion serving after the stop", timeout=30)["model_version"] == control
    code, body = http.post(f"{EXPERIMENTS}/{experiment_id}/start", None)
    assert code == 409 and body["error"] == "experiment_finished"
