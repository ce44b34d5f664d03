"""Experiment routes through the mlops function's resolver, with API Gateway proxy events, over moto S3 and real
Redis: creation and its refusals, the lifecycle, results from the live counters, and auto-promotion."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from local.inprocess import LambdaContext, load_function
from recloop.container import get_container, reset_container
from recloop.experiments import service as experiment_service
from recloop.experiments.counters import ExperimentCounters
from recloop.models.bundle import ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import EVENTS_DIR, TEST_BUCKET
from tests.support.registry import fake_popularity_loader, make_bundle

EXPERIMENTS = "/api/v1/mlops/experiments"


class ExperimentsApi:
    """The mlops function's resolver, called with proxy events built from events/event/record_a_click.json."""

    def __init__(self) -> None:
        self.app = load_function("mlops").app
        self.template = json.loads((EVENTS_DIR / "event" / "record_a_click.json").read_text())

    def call(self, method: str, path: str, resource: str, experiment_id: str | None = None, body: Any = None):
        event = json.loads(json.dumps(self.template))
        event.update(
            httpMethod=method,
            path=path,
            resource=resource,
            pathParameters={"experiment_id": experiment_id} if experiment_id else None,
            body=None if body is None else json.dumps(body),
        )
        event["requestContext"].update(httpMethod=method, resourcePath=resource, path=f"/v1{path}")
        response = self.app.resolve(event, LambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def create(self, body: Any) -> tuple[int, Any]:
        return self.call("POST", EXPERIMENTS, EXPERIMENTS, body=body)

    def list(self) -> tuple[int, Any]:
        return self.call("GET", EXPERIMENTS, EXPERIMENTS)

    def get(self, experiment_id: str) -> tuple[int, Any]:
        return self.call("GET", f"{EXPERIMENTS}/{experiment_id}", f"{EXPERIMENTS}/{{experiment_id}}", experiment_id)

    def start(self, experiment_id: str) -> tuple[int, Any]:
        path, resource = f"{EXPERIMENTS}/{experiment_id}/start", f"{EXPERIMENTS}/{{experiment_id}}/start"
        return self.call("POST", path, resource, experiment_id)

    def stop(self, experiment_id: str) -> tuple[int, Any]:
        path, resource = f"{EXPERIMENTS}/{experiment_id}/stop", f"{EXPERIMENTS}/{{experiment_id}}/stop"
        return self.call("POST", path, resource, experiment_id)


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """Two loadable versions (pop-1 champion, pop-2) and one that does not load (pop-broken)."""
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    reset_container()
    registry = get_container().registry
    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("pop-2"))
    registry.register(make_bundle("pop-broken", broken=True))
    registry.promote("pop-1", "bootstrap")
    return registry


@pytest.fixture
def api(registry: ModelRegistry) -> ExperimentsApi:
    return ExperimentsApi()


@pytest.fixture
def counters(redis_client: redis.Redis) -> ExperimentCounters:
    return ExperimentCounters(redis_client)


def body(**changes: Any) -> dict[str, Any]:
    """The guide's body, naming this registry's versions (model_path: the guide's legacy file paths)."""
    return {
        "name": "LightGBM vs Neural CF",
        "description": "Compare traditional vs deep learning approach",
        "variants": [
            {"name": "champion", "model_path": "/app/models/lgbm_v1.pkl", "model_version": "pop-1"},
            {"name": "challenger", "model_path": "/app/models/neural_cf_v2.pkl", "model_version": "pop-2"},
        ],
        "allocation_strategy": "thompson_sampling",
        "traffic_percentage": 50.0,
        **changes,
    }


def created(api: ExperimentsApi, **changes: Any) -> str:
    status, reply = api.create(body(**changes))
    assert status == 201, reply
    return reply["experiment_id"]


def a_clear_winner(counters: ExperimentCounters, experiment_id: str) -> None:
    """20,000 impressions each at 12 ms; the challenger converts at 7% against the champion's 5%."""
    for variant, conversions in (("champion", 1000), ("challenger", 1400)):
        counters.record_impressions(experiment_id, variant, [12.0] * 20_000)
        outcomes = [(f"{variant}-{n}", True) for n in range(conversions)]
        assert counters.record_outcomes(experiment_id, variant, outcomes) == conversions


# ---- create ----------------------------------------------------------------------------------------------------------


def test_the_guides_body_creates_a_draft(api: ExperimentsApi) -> None:
    status, reply = api.create(body())
    assert status == 201
    assert reply == {
        "experiment_id": reply["experiment_id"],
        "status": "draft",
        "message": "Experiment 'LightGBM vs Neural CF' created successfully",
    }
    assert reply["experiment_id"].startswith("exp_") and len(reply["experiment_id"]) == 16

    status, results = api.get(reply["experiment_id"])
    assert status == 200
    assert results["status"] == "draft" and results["allocation_strategy"] == "thompson_sampling"
    assert [(v["variant_id"], v["name"], v["model_version"], v["impressions"]) for v in results["variants"]] == [
        ("var_0", "champion", "pop-1", 0),
        ("var_1", "challenger", "pop-2", 0),
    ]
    assert results["winning_variant"] is None and results["total_impressions"] == 0
    assert results["total_conversions"] == 0 and set(results["srm"]) == {"p_value", "flagged"}


def test_strategy_and_traffic_default_to_the_settings(
    aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_ALLOCATION_STRATEGY", "epsilon_greedy")
    monkeypatch.setenv("DEFAULT_TRAFFIC_PERCENTAGE", "30")
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    reset_container()
    get_container().registry.register(make_bundle("pop-1"))
    get_container().registry.register(make_bundle("pop-2"))
    api = ExperimentsApi()
    bare = body()
    del bare["allocation_strategy"], bare["traffic_percentage"]
    assert api.create(bare)[0] == 201

    status, listed = api.list()
    assert status == 200 and listed["count"] == 1
    shown = listed["experiments"][0]
    assert (shown["allocation_strategy"], shown["traffic_percentage"]) == ("epsilon_greedy", 30.0)
    assert "salt" not in shown  # who gets which variant stays unguessable


def test_model_path_as_an_s3_uri_names_the_version(api: ExperimentsApi) -> None:
    variants = [
        {"name": "champion", "model_path": f"s3://{TEST_BUCKET}/models/pop-1/"},
        {"name": "challenger", "model_path": f"s3://{TEST_BUCKET}/models/pop-2/metadata.json"},
    ]
    experiment_id = created(api, variants=variants)
    assert [v["model_version"] for v in api.get(experiment_id)[1]["variants"]] == ["pop-1", "pop-2"]


def test_weights_of_a_fixed_split_are_kept(api: ExperimentsApi) -> None:
    variants = [
        {"name": "champion", "model_version": "pop-1", "weight": 0.8},
        {"name": "challenger", "model_version": "pop-2", "weight": 0.2},
    ]
    created(api, variants=variants, allocation_strategy="fixed_split")
    shown = api.list()[1]["experiments"][0]
    assert [v["weight"] for v in shown["variants"]] == [0.8, 0.2]


def test_an_aa_test_may_name_one_version_twice(api: ExperimentsApi) -> None:
    variants = [{"name": "a", "model_version": "pop-1"}, {"name": "b", "model_version": "pop-1"}]
    created(api, variants=variants)


def two(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "champion", "model_version": "pop-1", **first}, {"name": "challenger", **second}]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"allocation_strategy": "round_robin"}, "allocation_strategy"),
        ({"traffic_percentage": 150}, "traffic_percentage"),
        ({"traffic_percentage": -5}, "traffic_percentage"),
        ({"traffic_percentage": 0}, "traffic_percentage"),
        ({"variants": []}, "variants"),
        ({"variants": [{"name": "champion", "model_version": "pop-1"}]}, "variants"),
        ({"variants": two({}, {"name": "champion", "model_version": "pop-2"})}, "variants.1.name"),
        (
            {
                "variants": two({"weight": 0.5}, {"model_version": "pop-2", "weight": 0.4}),
                "allocation_strategy": "fixed_split",
            },
            "variants.weight",
        ),
        (
            {"variants": two({"weight": 0.5}, {"model_version": "pop-2"}), "allocation_strategy": "fixed_split"},
            "variants.1.weight",
        ),
        ({"variants": two({"weight": 0.5}, {"model_version": "pop-2", "weight": 0.5})}, "variants.0.weight"),
        ({"variants": two({}, {"model_version": "pop-9"})}, "variants.1.model_version"),
        ({"variants": two({}, {"model_version": "pop-broken"})}, "variants.1.model_version"),
        ({"variants": two({}, {"model_version": "../models"})}, "variants.1.model_version"),
        ({"variants": two({}, {})}, "variants.1.model_version"),
        ({"variants": two({}, {"model_path": "/app/models/neural_cf_v2.pkl"})}, "variants.1.model_path"),
        ({"variants": two({}, {"model_path": "s3://another-bucket/models/pop-2/"})}, "variants.1.model_path"),
        (
            {"variants": two({}, {"model_version": "pop-2", "model_path": f"s3://{TEST_BUCKET}/models/pop-1/"})},
            "variants.1.model_path",
        ),
        ({"variants": two({}, {"model_path": f"s3://{TEST_BUCKET}/models/pop-9/"})}, "variants.1.model_path"),
        ({"guardrails": {"max_latency_ratio": 0.5}}, "guardrails.max_latency_ratio"),
        ({"rollout_stages": [10, 50, 100]}, "rollout_stages"),  # without auto_promote
        ({"auto_promote": True, "rollout_stages": [10, 50]}, "rollout_stages"),
        ({"auto_promote": True, "rollout_stages": [50, 25, 100]}, "rollout_stages.1"),
        ({"auto_promote": True, "rollout_stages": [0, 100]}, "rollout_stages.0"),
        ({"auto_promote": True, "rollout_stages": []}, "rollout_stages"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_body_that_cannot_make_an_experiment_is_a_422_naming_the_field(
    api: ExperimentsApi, changes: dict[str, Any], field: str
) -> None:
    status, reply = api.create(body(**changes))
    assert status == 422, reply
    assert reply["errors"][0]["field"] == field, reply
    assert api.list()[1]["count"] == 0


# ---- lifecycle -------------------------------------------------------------------------------------------------------


def test_start_then_stop_without_a_winner(api: ExperimentsApi, counters: ExperimentCounters) -> None:
    experiment_id = created(api)
    status, reply = api.start(experiment_id)
    assert status == 200
    assert reply["status"] == "running" and reply["experiment_id"] == experiment_id and reply["started_at"]
    assert api.start(experiment_id)[0] == 200  # a retry changes nothing
    assert [e.experiment_id for e in get_container().experiment_store.running()] == [experiment_id]

    counters.record_impressions(experiment_id, "champion", [10.0] * 300)
    counters.record_impressions(experiment_id, "challenger", [20.0] * 200)
    counters.record_outcomes(experiment_id, "challenger", [("evt_1", True), ("evt_2", False)])
    status, final = api.stop(experiment_id)
    assert status == 200
    assert final["status"] == "stopped" and final["winning_variant"] is None
    assert final["decision"]["winning_variant"] is None and final["decision"]["reason"].startswith("stopped without")
    assert (final["total_impressions"], final["total_conversions"]) == (500, 1)
    assert final["variants"][1]["negatives"] == 1 and final["variants"][1]["avg_latency_ms"] == pytest.approx(20.0)
    assert get_container().experiment_store.running() == []

    # The final results are durable with the definition: the counters may go, the results stay.
    counters.reset(experiment_id)
    assert api.get(experiment_id) == (200, final)
    assert api.stop(experiment_id) == (200, final)  # stopping again changes nothing


def test_a_finished_experiment_cannot_start_again(api: ExperimentsApi) -> None:
    experiment_id = created(api)
    assert api.stop(experiment_id)[1]["status"] == "stopped"  # a draft stopped before it started
    status, reply = api.start(experiment_id)
    assert status == 409
    assert reply["error"] == "experiment_finished" and reply["status"] == "stopped"
    assert reply["experiment_id"] == experiment_id


def test_one_experiment_runs_at_a_time(api: ExperimentsApi) -> None:
    first, second = created(api), created(api, name="second")
    assert api.start(first)[0] == 200
    status, reply = api.start(second)
    assert status == 409
    assert reply["error"] == "experiment_running" and reply["running_experiment_id"] == first
    assert api.get(second)[1]["status"] == "draft"

    api.stop(first)
    assert api.start(second)[0] == 200


def test_starting_refuses_a_variant_whose_version_was_deleted(api: ExperimentsApi, registry: ModelRegistry) -> None:
    experiment_id = created(api)
    registry.delete("pop-2")
    status, reply = api.start(experiment_id)
    assert status == 409
    assert reply["field"] == "variants.1.model_version" and reply["version"] == "pop-2"


@pytest.mark.parametrize("experiment_id", ["exp_0123456789ab", "nope"])
def test_an_unknown_experiment_is_a_404(api: ExperimentsApi, experiment_id: str) -> None:
    for status, reply in (api.get(experiment_id), api.start(experiment_id), api.stop(experiment_id)):
        assert status == 404
        assert reply["error"] == "experiment_not_found" and reply["experiment_id"] == experiment_id


# ---- results and decisions -------------------------------------------------------------------------------------------


def test_results_read_the_live_counters(api: ExperimentsApi, counters: ExperimentCounters) -> None:
    experiment_id = created(api, allocation_strategy="fixed_split")
    api.start(experiment_id)
    counters.record_impressions(experiment_id, "champion", [10.0, 30.0])
    counters.record_impressions(experiment_id, "challenger", [12.0] * 4)
    assert counters.record_outcome(experiment_id, "challenger", "evt_1", positive=True)
    assert not counters.record_outcome(experiment_id, "challenger", "evt_1", positive=True)  # a redelivery

    status, results = api.get(experiment_id)
    assert status == 200
    champion, challenger = results["variants"]
    assert (champion["impressions"], champion["conversions"], champion["avg_latency_ms"]) == (2, 0, 20.0)
    assert (challenger["impressions"], challenger["conversions"]) == (4, 1)
    assert challenger["conversion_rate"] == pytest.approx(0.25)
    assert challenger["interval_low"] <= 0.25 <= challenger["interval_high"]
    assert (results["total_impressions"], results["total_conversions"]) == (6, 1)
    assert results["status"] == "running" and results["decided"] is False and results["winning_variant"] is None


def test_auto_promote_makes_the_winner_champion_and_concludes(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry
) -> None:
    experiment_id = created(api, auto_promote=True)
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)

    status, results = api.get(experiment_id)
    assert status == 200
    assert results["status"] == "concluded" and results["winning_variant"] == "challenger"
    assert results["confidence"] >= 0.95
    decision = results["decision"]
    assert decision["winning_variant"] == "challenger" and decision["promoted_version"] == "pop-2"
    assert decision["impressions"] == 40_000
    champion = registry.champion(use_cache=False)
    assert champion is not None and champion.version == "pop-2" and champion.previous_version == "pop-1"
    assert champion.reason.startswith(f"experiment {experiment_id}: challenger won")
    assert registry.history(1)[0]["reason"] == champion.reason
    assert get_container().experiment_store.running() == []
    assert api.get(experiment_id) == (200, results)  # read again: nothing more happens


def test_a_champion_changed_meanwhile_is_never_overridden(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = created(api, auto_promote=True)
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)
    registry.register(make_bundle("pop-3"))
    read_champion = registry.champion

    def read_then_an_operator_promotes(**options: Any) -> Any:
        pointer = read_champion(**options)
        registry.champion_pointer.promote("pop-3", "an operator's promotion")
        return pointer

    monkeypatch.setattr(get_container().experiments.registry, "champion", read_then_an_operator_promotes)
    status, results = api.get(experiment_id)
    assert status == 200
    assert results["status"] == "concluded" and results["decision"]["promoted_version"] is None
    assert "not promoted" in results["decision"]["reason"]
    assert read_champion(use_cache=False).version == "pop-3"


def test_without_auto_promote_a_decided_experiment_runs_until_stopped(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry
) -> None:
    experiment_id = created(api)
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)

    status, results = api.get(experiment_id)
    assert results["status"] == "running" and results["winning_variant"] == "challenger" and results["decided"]
    status, final = api.stop(experiment_id)
    assert status == 200
    assert final["status"] == "concluded" and final["decision"]["winning_variant"] == "challenger"
    assert final["decision"]["promoted_version"] is None
    assert registry.champion(use_cache=False).version == "pop-1"


# ---- races -----------------------------------------------------------------------------------------------------------


def test_a_start_in_progress_holds_the_slot_and_a_crashed_one_lets_go(
    api: ExperimentsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts at the same instant cannot both serve: the serving slot is claimed by a conditional write. A
    start that claimed it and died (its experiment still a draft) holds it for SLOT_CLAIM_SECONDS only."""
    first, second = created(api), created(api)
    store = get_container().experiment_store
    assert store.claim_slot(first, None)  # the first start claimed the slot, and has not written "running" yet
    status, reply = api.start(second)
    assert status == 409 and first in reply["message"] and "being started" in reply["message"]

    monkeypatch.setattr(experiment_service, "SLOT_CLAIM_SECONDS", 0.0)  # the first start died
    status, reply = api.start(second)
    assert status == 200 and reply["status"] == "running"
    status, reply = api.start(first)
    assert status == 409 and second in reply["message"]


def test_a_stop_racing_an_auto_promotion_promotes_once(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = created(api, auto_promote=True)
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)
    service = get_container().experiments
    read_champion = service.registry.champion
    raced: list[Any] = []

    def an_operator_stops_meanwhile(**options: Any) -> Any:
        if not raced:  # the results read has read the experiment; the stop writes first
            raced.append("stopping")
            raced.append(service.stop(experiment_id))
        return read_champion(**options)

    monkeypatch.setattr(service.registry, "champion", an_operator_stops_meanwhile)
    status, results = api.get(experiment_id)
    assert status == 200
    assert results["status"] == "concluded" and results["decision"] == raced[1].decision.model_dump()
    assert results["decision"]["promoted_version"] == "pop-2"
    promotions = [entry for entry in registry.history(10) if entry["reason"].startswith(f"experiment {experiment_id}")]
    assert len(promotions) == 1


def test_a_promotion_cut_short_is_completed_by_the_next_read(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conclusion is written before the promotion is tried: if the promotion fails (S3 down, the instance
    killed), the next read finds it pending and makes it, against the champion the decision was made over."""
    experiment_id = created(api, auto_promote=True)
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)
    service = get_container().experiments
    promote = service.registry.promote

    def s3_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("S3 unreachable")

    monkeypatch.setattr(service.registry, "promote", s3_down)
    with pytest.raises(ConnectionError):
        service.conclude_if_decided(experiment_id)
    pending = service.get(experiment_id)
    assert pending.status == "concluded" and pending.decision is not None and pending.decision.promotion_pending
    assert registry.champion(use_cache=False).version == "pop-1"

    monkeypatch.setattr(service.registry, "promote", promote)
    status, results = api.get(experiment_id)
    assert status == 200 and results["decision"]["promoted_version"] == "pop-2"
    assert not results["decision"]["promotion_pending"]
    assert registry.champion(use_cache=False).version == "pop-2"


# ---- staged rollout --------------------------------------------------------------------------------------------------


def rollout_stage_traffic(
    counters: ExperimentCounters, experiment_id: str, results: dict[str, Any], winner_rate: float, impressions: int
) -> None:
    """Traffic of the current rollout stage, split as the stage asks: the champion converts at 5%."""
    share = results["rollout"]["current_share"] / 100
    winner_arm, baseline_arm = (arm["variant"] for arm in results["rollout"]["stage_arms"])
    for arm, served, rate in (
        (winner_arm, round(impressions * share), winner_rate),
        (baseline_arm, round(impressions * (1 - share)), 0.05),
    ):
        counters.record_impressions(experiment_id, arm, [12.0] * served)
        outcomes = [(f"{arm}-{n}", True) for n in range(round(served * rate))]
        counters.record_outcomes(experiment_id, arm, outcomes)


def test_a_staged_rollout_ramps_the_winner_through_its_stages_then_promotes(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry
) -> None:
    experiment_id = created(
        api, auto_promote=True, rollout_stages=[10, 50, 100], guardrails={"rollout_stage_impressions": 500}
    )
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)

    status, results = api.get(experiment_id)
    assert status == 200 and results["status"] == "rolling_out"
    assert results["winning_variant"] == "challenger" and results["total_impressions"] == 40_000  # final
    rollout = results["rollout"]
    assert rollout["current_share"] == 10 and rollout["baseline_version"] == "pop-1"
    assert rollout["model_version"] == "pop-2" and "0 of 500 impressions" in rollout["stage_check"]
    assert registry.champion(use_cache=False).version == "pop-1"
    assert [e.experiment_id for e in get_container().experiment_store.running()] == [experiment_id]

    rollout_stage_traffic(counters, experiment_id, results, winner_rate=0.07, impressions=6_000)  # 600 at 10%
    status, results = api.get(experiment_id)
    assert results["status"] == "rolling_out" and results["rollout"]["current_share"] == 50
    assert results["rollout"]["history"][0]["outcome"].startswith("guardrails held over 600 impressions")

    rollout_stage_traffic(counters, experiment_id, results, winner_rate=0.07, impressions=1_000)
    status, results = api.get(experiment_id)
    assert results["status"] == "concluded" and results["decision"]["promoted_version"] == "pop-2"
    assert [stage["share"] for stage in results["rollout"]["history"]] == [10, 50, 100]
    assert "every rollout stage passed" in results["decision"]["reason"]
    champion = registry.champion(use_cache=False)
    assert champion.version == "pop-2" and champion.reason.startswith(f"experiment {experiment_id}")
    assert get_container().experiment_store.running() == []


def test_a_rollout_stage_whose_winner_converts_worse_halts_with_the_champion_kept(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry
) -> None:
    experiment_id = created(api, auto_promote=True, rollout_stages=[25, 100])
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)
    _, results = api.get(experiment_id)
    assert results["status"] == "rolling_out"

    # In production the winner converts at 2% against the champion's 5%: halted before its stage is complete.
    rollout_stage_traffic(counters, experiment_id, results, winner_rate=0.02, impressions=6_000)
    _, results = api.get(experiment_id)
    assert results["status"] == "concluded" and results["decision"]["promoted_version"] is None
    assert "converts worse than the champion" in results["rollout"]["history"][-1]["outcome"]
    assert "champion unchanged" in results["decision"]["reason"]
    assert registry.champion(use_cache=False).version == "pop-1"
    assert get_container().experiment_store.running() == []


def test_stopping_a_rollout_keeps_the_champion(
    api: ExperimentsApi, counters: ExperimentCounters, registry: ModelRegistry
) -> None:
    experiment_id = created(api, auto_promote=True, rollout_stages=[10, 100])
    api.start(experiment_id)
    a_clear_winner(counters, experiment_id)
    assert api.get(experiment_id)[1]["status"] == "rolling_out"
    status, final = api.stop(experiment_id)
    assert status == 200 and final["status"] == "stopped"
    assert "stopped by an operator at 10%" in final["decision"]["reason"]
    assert registry.champion(use_cache=False).version == "pop-1"
    assert api.start(experiment_id)[0] == 409  # finished
