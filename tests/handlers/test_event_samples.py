"""Every sample in events/ against its expected response (the layout and placeholders: events/README.md).

events/<function>/<scenario>.json is given to functions/<function>/app.py's handler in this process, over a real
Redis and moto S3, Kinesis and SQS, after SETUP has put in place what the scenario needs (mostly prior requests
through the same handlers). The reply must match events/<function>/<scenario>.response.json: for the API functions
`{"statusCode", "body"}` with the body parsed as JSON (and "headers", when given, compared for the names listed);
for the others the function's return value itself.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from local.inprocess import ApiClient, LambdaContext, load_function
from recloop.adapters.functions import Invocation
from recloop.adapters.objects import ObjectStore
from recloop.container import get_container, reset_container
from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import Experiment, Variant
from recloop.experiments.store import ExperimentStore
from recloop.ingest.batch import process_records
from recloop.learning.training import train_candidate
from recloop.models.bundle import ModelKind
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import EVENTS_DIR, REGION, ROOT, TEST_BUCKET
from tests.support.learning import SMALL_MF, T0, champion, event, stream_with_new_item, tastes
from tests.support.retraining import pass_through_state_machine
from tests.support.stream import kinesis_batch, published_twice, records
from tests.support.tokens import create_signing_secret

RESPONSE_SUFFIX = ".response.json"
HTTP_FUNCTIONS = ("event", "recommend", "ops", "mlops")  # behind API Gateway (REST proxy events)
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))

# ---- the matcher: an expected value, or a placeholder standing for a value that cannot be fixed ---------------------

ANY = "<any>"  # any value, null included (the key must still be there)
ANY_STRING = "<any-string>"
ANY_NUMBER = "<any-number>"


def mismatches(actual: Any, expected: Any, where: str = "$") -> list[str]:
    """Where `actual` differs from `expected`: objects have the same keys, lists the same length, in order."""
    if expected == ANY:
        return []
    if expected == ANY_STRING:
        return [] if isinstance(actual, str) else [f"{where}: expected a string, got {actual!r}"]
    if expected == ANY_NUMBER:
        is_number = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if is_number else [f"{where}: expected a number, got {actual!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        found = [f"{where}.{key}: missing" for key in expected if key not in actual]
        found += [f"{where}.{key}: not expected (got {actual[key]!r})" for key in actual if key not in expected]
        for key in expected.keys() & actual.keys():
            found += mismatches(actual[key], expected[key], f"{where}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected a list of {len(expected)}, got {actual!r}"]
        pairs = enumerate(zip(actual, expected, strict=True))
        return [m for n, (a, e) in pairs for m in mismatches(a, e, f"{where}[{n}]")]
    if actual != expected or isinstance(actual, bool) != isinstance(expected, bool):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def http_view(response: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """A proxy response as a response file holds it: the status, the body as JSON, the headers the file names."""
    body = response.get("body")
    with contextlib.suppress(TypeError, ValueError):  # not JSON (the Swagger UI's HTML): compared as is
        body = json.loads(body)
    view = {"statusCode": response["statusCode"], "body": body}
    if "headers" in expected:
        headers = {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items() if v}
        headers.update(response.get("headers") or {})
        view["headers"] = {name: headers[name] for name in expected["headers"] if name in headers}
    return view


# ---- the scenarios ---------------------------------------------------------------------------------------------------


def scenario_names() -> list[str]:
    """`<function>/<scenario>` of every sample and of every response file, so an orphan of either fails its case."""
    names = set()
    for path in EVENTS_DIR.glob("*/*.json"):
        name = path.relative_to(EVENTS_DIR).as_posix()
        names.add(name.removesuffix(RESPONSE_SUFFIX) if name.endswith(RESPONSE_SUFFIX) else name.removesuffix(".json"))
    return sorted(names)


def sample_path(name: str) -> Path:
    return EVENTS_DIR / f"{name}.json"


def response_path(name: str) -> Path:
    return EVENTS_DIR / f"{name}{RESPONSE_SUFFIX}"


def read(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass
class Deployment:
    """The functions over one Redis, bucket, stream and dead-letter queue, each called in this process."""

    api: ApiClient
    handlers: dict[str, Callable[[dict, Any], Any]]
    registry: ModelRegistry

    def invoke(self, function: str, event: Any) -> Any:
        return self.handlers[function](copy.deepcopy(event), LambdaContext())

    def experiments(self) -> ExperimentStore:
        return get_container().experiment_store

    def post_events(self, *events: tuple[str, str, str]) -> None:
        for user, item, kind in events:
            assert self.api.post_event(user_id=user, item_id=item, event_type=kind)[0] == 202


@pytest.fixture
def deployment(aws: dict[str, Any], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """Configured as the template configures the functions (a small online-learning buffer, as in test_stream)."""
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-online-dlq")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)
    monkeypatch.setenv("ONLINE_UPDATE_FUNCTION_NAME", "recloop-test-online-update")
    monkeypatch.setenv("ONLINE_LEARNING_BUFFER_SIZE", "40")
    monkeypatch.setenv("ONLINE_LEARNING_BATCH_SIZE", "8")
    monkeypatch.setenv("AUTH_SIGNING_SECRET_ARN", create_signing_secret())  # the key of the authorizer samples
    monkeypatch.setenv("RETRAIN_STATE_MACHINE_ARN", pass_through_state_machine(REGION))
    reset_container()
    api = ApiClient()
    handlers = {name: module.lambda_handler for name, module in api.functions.items()}
    functions = ("online_update", "train", "workflow", "authorizer")
    handlers |= {name: load_function(name).lambda_handler for name in functions}
    deployed = Deployment(api, handlers, ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client))

    # The mlops function's synchronous invocation of OnlineUpdateFunction reaches its handler here, through JSON.
    def invoke_online_update(_client: Any, _name: str, event: dict[str, Any]) -> Invocation:
        return Invocation(json.loads(json.dumps(deployed.invoke("online_update", event))), None)

    monkeypatch.setattr("recloop.handlers.http.online.invoke", invoke_online_update)
    return deployed


def known_user(d: Deployment) -> None:
    """Three fans like item_50 and item_51, one of them item_52 too; user_123 clicked item_50 before."""
    d.post_events(*[(f"fan{n}", item, "like") for n in range(3) for item in ("item_50", "item_51")])
    d.post_events(("fan0", "item_52", "like"), ("user_123", "item_50", "click"))


def popular_items(d: Deployment) -> None:
    """item_60 bought three times, item_61 twice, item_62 once; user_789 has never been seen."""
    d.post_events(*[(f"crowd{n}", f"item_{60 + i}", "purchase") for i in range(3) for n in range(3 - i)])


def some_traffic(d: Deployment) -> None:
    """A click and a like, then one recommendation for a known user and one for a new user."""
    d.post_events(("user_123", "item_50", "click"), ("user_123", "item_51", "like"))
    assert d.api.recommend("user_123", 3)[0] == 200
    assert d.api.recommend("user_789", 3)[0] == 200


def the_same_request_once(d: Deployment) -> None:
    d.invoke("event", read(sample_path("event/retry_an_event_with_the_same_event_id")))


def a_champion(d: Deployment) -> None:
    champion(d.registry)


def buffered_events_and_a_champion(d: Deployment) -> None:
    """30 events buffered by the stream consumer (below the buffer size of 40: no update ran yet)."""
    champion(d.registry)
    assert d.invoke("online_update", kinesis_batch(records(stream_with_new_item(20)))) == {"batchItemFailures": []}


def two_published_updates(d: Deployment) -> None:
    published_twice(lambda event: d.invoke("online_update", event), d.registry)


def two_versions(d: Deployment) -> None:
    """The champion mf-online-test-0 and a challenger, mf-challenger (the versions the experiment samples name)."""
    champion(d.registry, "mf-challenger")
    champion(d.registry)


def a_draft_experiment(d: Deployment) -> None:
    """The guide's experiment, exp_a1b2c3d4e5f6, created but not started."""
    two_versions(d)
    d.experiments().create(
        Experiment(
            experiment_id="exp_a1b2c3d4e5f6",
            name="LightGBM vs Neural CF",
            description="Compare traditional vs deep learning approach",
            variants=[
                Variant(variant_id="var_0", name="champion", model_version="mf-online-test-0"),
                Variant(variant_id="var_1", name="challenger", model_version="mf-challenger"),
            ],
            allocation_strategy=AllocationStrategy.THOMPSON_SAMPLING,
            traffic_percentage=50.0,
            created_at="2026-11-27T12:00:00+00:00",
        )
    )


def a_running_experiment_with_traffic(d: Deployment) -> None:
    """exp_a1b2c3d4e5f6 running: 400 impressions per variant, 20 conversions for the champion, 26 for the
    challenger (too few for a decision)."""
    a_draft_experiment(d)
    get_container().experiments.start("exp_a1b2c3d4e5f6")
    counters = get_container().experiment_counters
    for variant, latency_ms, conversions in (("champion", 12.0, 20), ("challenger", 18.0, 26)):
        counters.record_impressions("exp_a1b2c3d4e5f6", variant, [latency_ms] * 400)
        counters.record_outcomes("exp_a1b2c3d4e5f6", variant, [(f"{variant}-{n}", True) for n in range(conversions)])


def a_stopped_experiment(d: Deployment) -> None:
    a_draft_experiment(d)
    get_container().experiments.stop("exp_a1b2c3d4e5f6")


def a_retrain_running(d: Deployment) -> None:
    """A manual retrain started at the guide's time, still running."""
    get_container().retraining.clock = lambda: datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    assert get_container().retraining.request(force=True).execution_name == "retrain-manual-20261127T110000Z"


def an_archive_of_120_events(d: Deployment) -> None:
    """Twenty users each like six items of one of two groups, archived as the stream consumer archives them."""
    history = tastes(20, 1_700_000_000.0, {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]})
    assert get_container().stream_consumer.archive_many(records(history)) == {}


def a_drift_check(d: Deployment) -> None:
    """The champion, mf-drift-0, trained on 240 likes of Drama and Comedy items; then 120 purchases of Comedy items
    through the stream consumer, and one drift check: the event-type and category mixes moved."""
    genres = {"a": "Drama", "b": "Comedy"}
    items = [{"item_id": f"{group}{n}", "categories": [genre]} for group, genre in genres.items() for n in range(6)]
    assert d.api.request("event", "POST", "/api/v1/items", {"items": items})[0] == 200
    services = get_container()
    history = tastes(40, T0, {group: [f"{group}{n}" for n in range(6)] for group in genres})
    trained = train_candidate(
        ModelKind.MF,
        history,
        services.settings,
        "mf-drift-0",
        mf_params=SMALL_MF,
        categories_of=services.store.categories_of,
    )
    d.registry.register(trained.bundle)
    d.registry.promote("mf-drift-0", reason="drift sample")
    later = [event(f"user{u}", f"b{u % 6}", T0 + 10_000 + u, "purchase") for u in range(120)]
    assert process_records(records(later), services.stream_consumer, services.dead_letters).failed == {}
    services.drift.check()


# What each scenario needs in place before its sample is invoked (none: a fresh Redis, bucket, stream and queue).
SETUP: dict[str, Callable[[Deployment], None]] = {
    "event/retry_an_event_with_the_same_event_id": the_same_request_once,
    "recommend/recommend_known_user": known_user,
    "recommend/recommend_cold_user": popular_items,
    "ops/metrics": some_traffic,
    "mlops/list_models": a_champion,
    "mlops/rollback_online_update_with_nothing_to_roll_back": a_champion,
    "online_update/trigger_an_update_on_the_buffered_events": buffered_events_and_a_champion,
    "online_update/rollback_to_the_previous_checkpoint": two_published_updates,
    "online_update/rollback_with_nothing_to_roll_back": a_champion,
    "train/train_and_promote_the_first_model": an_archive_of_120_events,
    "mlops/create_an_experiment": two_versions,
    "mlops/create_an_experiment_with_an_unknown_version": two_versions,
    "mlops/list_experiments": a_draft_experiment,
    "mlops/start_an_experiment": a_draft_experiment,
    "mlops/start_a_stopped_experiment": a_stopped_experiment,
    "mlops/experiment_results": a_running_experiment_with_traffic,
    "mlops/stop_an_experiment": a_running_experiment_with_traffic,
    "mlops/retrain_manually_while_one_runs": a_retrain_running,
    "workflow/fail_a_retrain_that_found_no_events": a_retrain_running,
    "train/prepare_the_dataset_of_a_retrain": an_archive_of_120_events,
    "mlops/drift_reports": a_drift_check,
}


def run(d: Deployment, name: str, expected: Any) -> Any:
    """Set up, invoke the sample, and return the reply as the response file holds it."""
    function = name.split("/", maxsplit=1)[0]
    SETUP.get(name, lambda _: None)(d)
    try:
        reply = d.invoke(function, read(sample_path(name)))
    except Exception as exc:  # a function error, as Lambda reports it (the authorizer's "Unauthorized")
        if function in HTTP_FUNCTIONS:
            raise
        return {"errorType": type(exc).__name__, "errorMessage": str(exc)}
    return http_view(reply, expected) if function in HTTP_FUNCTIONS else reply


@pytest.mark.parametrize("name", scenario_names())
def test_sample_gets_its_expected_response(deployment: Deployment, name: str) -> None:
    assert sample_path(name).exists(), f"{response_path(name).name} has no sample {sample_path(name).name}"
    assert response_path(name).exists(), f"{sample_path(name).name} has no expected response"
    expected = read(response_path(name))
    actual = run(deployment, name, expected)
    assert mismatches(actual, expected) == [], json.dumps(actual, indent=2)


def test_every_function_has_samples_and_every_file_is_a_pair() -> None:
    folders = sorted(p.name for p in EVENTS_DIR.iterdir() if p.is_dir())
    assert folders == FUNCTIONS  # one folder per function, named as functions/<name>/
    strays = [p.name for p in EVENTS_DIR.iterdir() if p.is_file() and p.name != "README.md"]
    strays += [p.relative_to(EVENTS_DIR).as_posix() for p in EVENTS_DIR.glob("*/*") if p.suffix != ".json"]
    assert strays == []
    names = scenario_names()
    assert [n for n in names if not (sample_path(n).exists() and response_path(n).exists())] == []
    assert set(SETUP) <= set(names)  # a renamed scenario keeps its setup
    assert any(read(response_path(n)).get("statusCode", 0) // 100 == 4 for n in names)


def test_a_changed_expected_value_fails_the_match(deployment: Deployment) -> None:
    name = "event/record_a_click"
    expected = read(response_path(name))
    actual = run(deployment, name, expected)
    assert mismatches(actual, expected) == []

    wrong = copy.deepcopy(expected)
    wrong["body"]["status"] = "duplicate"
    assert mismatches(actual, wrong) == ["$.body.status: expected 'duplicate', got 'accepted'"]
    wrong = {**copy.deepcopy(expected), "statusCode": 200}
    assert mismatches(actual, wrong) == ["$.statusCode: expected 200, got 202"]


@pytest.mark.parametrize(
    ("actual", "expected", "found"),
    [
        ({"id": "evt_1"}, {"id": ANY_STRING}, []),
        ({"id": 7}, {"id": ANY_STRING}, ["$.id: expected a string, got 7"]),
        ({"ms": 0.3}, {"ms": ANY_NUMBER}, []),
        ({"ms": True}, {"ms": ANY_NUMBER}, ["$.ms: expected a number, got True"]),
        ({"x": None}, {"x": ANY}, []),
        ({}, {"x": ANY}, ["$.x: missing"]),
        ({"x": 1, "y": 2}, {"x": 1}, ["$.y: not expected (got 2)"]),
        ([1, 2], [1], ["$: expected a list of 1, got [1, 2]"]),
        ({"ok": 1}, {"ok": True}, ["$.ok: expected True, got 1"]),
    ],
)
def test_placeholders(actual: Any, expected: Any, found: list[str]) -> None:
    assert mismatches(actual, expected) == found
