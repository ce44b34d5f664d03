"""The recommend and event routes while an experiment runs: the answer names the experiment, the variant and the
version that served it; events about the recommended items are credited to it once."""

from __future__ import annotations

from typing import Any

import pytest

from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import Experiment, ExperimentStatus, Variant
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.models.mf import MFHyperparameters, train_mf
from tests.support.emf import emitted, named
from tests.support.learning import trained

EXPERIMENT_ID = "exp_0000000000cd"
USERS = [f"user{n}" for n in range(24)]


@pytest.fixture
def services(api) -> Any:
    from recloop.container import get_container

    services = get_container()
    mf, history = trained()
    services.registry.register(mf.to_bundle(ModelMetadata(version="mf-a", kind=ModelKind.MF)))
    smaller = train_mf(history, MFHyperparameters(factors=4, iterations=4))
    services.registry.register(smaller.to_bundle(ModelMetadata(version="mf-b", kind=ModelKind.MF)))
    services.registry.promote("mf-a", reason="test champion")
    services.store.apply_many(history)
    services.champion.check_seconds = 0
    services.running_experiments.seconds = 0
    services.experiment_store.running_cache_seconds = 0
    return services


def start_experiment(services: Any) -> Experiment:
    experiment = Experiment(
        experiment_id=EXPERIMENT_ID,
        name="mf against a smaller mf",
        variants=[
            Variant(variant_id="var_0", name="control", model_version="mf-a"),
            Variant(variant_id="var_1", name="challenger", model_version="mf-b"),
        ],
        allocation_strategy=AllocationStrategy.FIXED_SPLIT,
        traffic_percentage=100.0,
        status=ExperimentStatus.RUNNING,
    )
    services.experiment_store.create(experiment)
    return experiment


def counts(services: Any) -> dict[str, tuple[int, int, int]]:
    arms = services.experiment_counters.counts(EXPERIMENT_ID, ["control", "challenger"])
    return {name: (arm.impressions, arm.conversions, arm.negatives) for name, arm in arms.items()}


def test_without_an_experiment_the_champion_answers_as_before(api, services: Any) -> None:
    status, reply = api.recommend("user1", 3)
    assert status == 200 and reply["model_version"] == "mf-a"
    assert reply["experiment_id"] is None and reply["variant"] is None


def test_recommend_answers_from_both_variants_and_counts_each_list(api, services: Any) -> None:
    start_experiment(services)
    by_variant: dict[str, set[str]] = {}
    for user in USERS:
        status, reply = api.recommend(user, 3)
        assert status == 200 and reply["experiment_id"] == EXPERIMENT_ID
        by_variant.setdefault(reply["variant"], set()).add(reply["model_version"])
        assert api.recommend(user, 3)[1]["variant"] == reply["variant"]  # sticky
    assert by_variant == {"control": {"mf-a"}, "challenger": {"mf-b"}}
    impressions = {name: arm[0] for name, arm in counts(services).items()}
    assert sum(impressions.values()) == 2 * len(USERS) and min(impressions.values()) > 0


def test_outcomes_of_recommended_items_are_credited_once(api, services: Any) -> None:
    start_experiment(services)
    _, first = api.recommend("user1", 3)
    _, second = api.recommend("user2", 3)
    click = {
        "user_id": "user1",
        "item_id": first["items"][0]["item_id"],
        "event_type": "click",
        "event_id": "evt-click-1",
        "recommendation_id": first["recommendation_id"],
    }
    status, reply = api.request("event", "POST", "/api/v1/event", click)
    assert status == 202 and reply["status"] == "accepted"
    status, reply = api.request("event", "POST", "/api/v1/event", click)  # the client's retry
    assert status == 202 and reply["status"] == "duplicate"
    purchase = {"user_id": "user2", "item_id": second["items"][1]["item_id"], "event_type": "purchase"}
    dislike = {"user_id": "user2", "item_id": second["items"][0]["item_id"], "event_type": "dislike"}
    status, _ = api.request("event", "POST", "/api/v1/events/batch", {"events": [purchase, dislike]})
    assert status == 202

    expected = {"control": [0, 0, 0], "challenger": [0, 0, 0]}
    expected[first["variant"]][:2] = [1, 1]
    expected[second["variant"]][0] += 1
    expected[second["variant"]][1] += 1
    expected[second["variant"]][2] += 1
    assert counts(services) == {name: tuple(values) for name, values in expected.items()}


def test_a_malformed_recommendation_id_is_refused_naming_the_field(api, services: Any) -> None:
    event = {"user_id": "user1", "item_id": "a1", "event_type": "click", "recommendation_id": "rec_not-ours"}
    status, reply = api.request("event", "POST", "/api/v1/event", event)
    assert status == 422 and "recommendation_id" in str(reply)


def test_impressions_and_conversions_are_cloudwatch_metrics_of_their_variant(api, services: Any, capsys) -> None:
    start_experiment(services)
    _, shown = api.recommend("user1", 3)
    click = {"user_id": "user1", "item_id": shown["items"][0]["item_id"], "event_type": "click"}
    click["recommendation_id"] = shown["recommendation_id"]
    assert api.request("event", "POST", "/api/v1/event", click)[0] == 202
    dislike = {**click, "item_id": shown["items"][1]["item_id"], "event_type": "dislike"}
    assert api.request("event", "POST", "/api/v1/event", dislike)[0] == 202

    data = emitted(capsys.readouterr().out)
    arm = {"Experiment": EXPERIMENT_ID, "Variant": shown["variant"], "service": "recloop"}
    assert [(d.dimensions, d.values) for d in named(data, "ExperimentImpressions")] == [(arm, [1.0])]
    assert [(d.dimensions, d.values) for d in named(data, "AttributedConversions")] == [(arm, [1.0])]  # not the dislike
