"""Drift detection wired into the running system, in process: a trained ranker's version carries its reference,
recommendations and events feed the live window through the recommend and stream functions, the first full served
window of a lineage becomes its served baseline, and later checks compare the windows with the baseline (served) and
the training reference (events); GET /api/v1/mlops/drift shows the reports."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from local.inprocess import ApiClient, LambdaContext, load_function
from recloop.container import get_container, reset_container
from recloop.core.events import EventType, Interaction
from recloop.drift.features import MONITORED_FEATURES, Source
from recloop.drift.model import DriftReport, FeatureVerdict
from recloop.drift.reference import REFERENCE_FILE, ReferenceStore
from recloop.handlers.http.drift import HISTORY_LENGTH
from recloop.ingest.consumer import StreamRecord
from recloop.learning.training import RankerHyperparameters, train_candidate
from recloop.models.bundle import ModelBundle, ModelKind
from recloop.models.loading import load_model
from tests.support.environment import REGION, TEST_BUCKET, TEST_STREAM
from tests.support.learning import SMALL_MF
from tests.support.stream import kinesis_batch

DRIFT = "/api/v1/mlops/drift"
VERSION = "lgbm-drift-1"
GENRES = ("Drama", "Comedy", "Action", "Horror")
ITEMS_PER_GENRE = 10
USERS = 200
EVENTS_PER_USER = 15
# The training traffic's event-type mix: two in five events are positive, so the ranker gets its queries.
MIX = {"view": 40, "click": 20, "like": 25, "purchase": 15}
SMALL_RANKER = RankerHyperparameters(negatives_per_query=8, rounds=20, min_data_in_leaf=5)
SPAN_SECONDS = 2 * 86_400
# Requests in a served window of the test world, and so the rows its baseline is taken from.
BASELINE_ROWS = 150
SERVED_FEATURES = MONITORED_FEATURES.columns(Source.SERVED)


def item(genre: int, n: int) -> str:
    return f"{GENRES[genre].lower()}{n}"


def taste_traffic(rng: random.Random, users: int, per_user: int, start: float, span: float) -> list[Interaction]:
    """Each user mostly picks items of one genre (user % 4), the event type drawn from MIX."""
    events = []
    for u in range(users):
        for n in range(per_user):
            genre = u % len(GENRES) if rng.random() < 0.8 else rng.randrange(len(GENRES))
            t = start + rng.random() * span
            events.append(
                Interaction(
                    event_id=f"h-{u}-{n}",
                    user_id=f"user{u}",
                    item_id=item(genre, rng.randrange(ITEMS_PER_GENRE)),
                    event_type=EventType(rng.choices(list(MIX), list(MIX.values()))[0]),
                    timestamp=t,
                    received_at=t,
                )
            )
    return sorted(events, key=lambda e: e.timestamp)


class Stream:
    """The stream function fed with what the event function put on the (moto) Kinesis stream, batch by batch."""

    def __init__(self, kinesis: Any) -> None:
        self.kinesis = kinesis
        self.handler = load_function("online_update").lambda_handler
        shard = kinesis.describe_stream(StreamName=TEST_STREAM)["StreamDescription"]["Shards"][0]["ShardId"]
        self.shard = shard
        self.iterator = kinesis.get_shard_iterator(
            StreamName=TEST_STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def deliver(self) -> int:
        delivered = 0
        while True:
            reply = self.kinesis.get_records(ShardIterator=self.iterator, Limit=100)
            self.iterator = reply["NextShardIterator"]
            if not reply["Records"]:
                return delivered
            batch = [StreamRecord(self.shard, r["SequenceNumber"], r["Data"]) for r in reply["Records"]]
            assert self.handler(kinesis_batch(batch), LambdaContext()) == {"batchItemFailures": []}
            delivered += len(batch)


@pytest.fixture
def champion(api: ApiClient, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A small lgbm trained on two days of taste traffic (its items' genres in the catalogue), registered and
    promoted; the traffic is in the feature store, as the stream had applied it."""
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="recloop-test-online-dlq")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queue)  # the stream function's, as the template configures it
    reset_container()
    services = get_container()
    items = [{"item_id": item(g, n), "categories": [GENRES[g]]} for g in range(len(GENRES)) for n in range(10)]
    assert api.request("event", "POST", "/api/v1/items", {"items": items})[0] == 200
    history = taste_traffic(random.Random(7), USERS, EVENTS_PER_USER, time.time() - SPAN_SECONDS - 600, SPAN_SECONDS)
    services.store.apply_many(history)
    result = train_candidate(
        ModelKind.LGBM,
        history,
        services.settings,
        VERSION,
        mf_params=SMALL_MF,
        ranker_params=SMALL_RANKER,
        categories_of=services.store.categories_of,
    )
    services.registry.register(result.bundle)
    services.registry.promote(VERSION, reason="drift test champion")
    services.champion.check_seconds = 0
    return services


def post_events(api: ApiClient, events: list[dict[str, str]]) -> None:
    for start in range(0, len(events), 500):
        status, reply = api.request("event", "POST", "/api/v1/events/batch", {"events": events[start : start + 500]})
        assert status == 202, reply


def live_events(rng: random.Random, count: int, mix: dict[str, int], genres: range) -> list[dict[str, str]]:
    return [
        {
            "user_id": f"user{rng.randrange(USERS)}",
            "item_id": item(rng.choice(genres), rng.randrange(ITEMS_PER_GENRE)),
            "event_type": rng.choices(list(mix), list(mix.values()))[0],
        }
        for _ in range(count)
    ]


def verdicts(report: DriftReport) -> dict[str, FeatureVerdict]:
    return {row.feature: row.verdict for row in report.features}


def test_a_trained_version_carries_its_reference_and_still_loads(champion: Any) -> None:
    bundle = champion.registry.load(VERSION)
    assert REFERENCE_FILE in bundle.metadata.files
    load_model(bundle)  # the extra file changes nothing for serving
    reference = ReferenceStore(champion.objects).for_version(VERSION)
    assert reference.rows["served"] >= 100 and reference.rows["events"] == USERS * EVENTS_PER_USER
    assert set(reference.sample.categorical["item_category"]) == set(GENRES)


def recommend_for(api: ApiClient, users: list[int], body: dict[str, Any] | None = None) -> str:
    """One recommend request per user; the version that served them."""
    served = set()
    for u in users:
        status, reply = api.request("recommend", "POST", "/api/v1/recommend", {"user_id": f"user{u}", **(body or {})})
        assert status == 200, reply
        served.add(reply["model_version"])
    (version,) = served
    return version


def take_the_baseline(api: ApiClient, stream: Stream, champion: Any) -> DriftReport:
    """Events like the training's, then a window of served traffic like it: the first check takes that window as
    the served stream's baseline and tests the events against the training reference."""
    post_events(api, live_events(random.Random(11), 300, MIX, range(len(GENRES))))
    assert stream.deliver() == 300
    recommend_for(api, random.Random(1).sample(range(USERS), BASELINE_ROWS))
    return champion.drift.check()


@pytest.fixture
def baseline_rows(champion: Any) -> int:
    # The deployment's baseline is a full reservoir (5,000 requests); the test world serves 150 per window.
    champion.drift.baseline_rows = BASELINE_ROWS
    return BASELINE_ROWS


@pytest.mark.usefixtures("baseline_rows")
def test_served_traffic_is_compared_with_its_own_baseline_not_the_training_rows(
    api: ApiClient, aws: dict[str, Any], champion: Any
) -> None:
    """Served right after training, every user has its whole history where the training queries saw users part-way
    through theirs: against the training rows most served features would "drift" on traffic from the very
    population the model learned from. Against the model's own early traffic, none does."""
    stream = Stream(aws["kinesis"])

    first = take_the_baseline(api, stream, champion)

    assert first.model_version == first.reference_version == VERSION
    assert first.window_observed == {"served": BASELINE_ROWS, "events": 300}
    found = verdicts(first)
    assert set(found) == {feature.name for feature in MONITORED_FEATURES}
    assert {found[name] for name in SERVED_FEATURES} == {FeatureVerdict.BASELINE}
    assert found["event_type"] is found["item_category"] is FeatureVerdict.STABLE
    assert not first.drifted and first.served_baseline_taken_at is not None
    assert champion.drift_window.sample(VERSION).rows == {"served": 0, "events": 0}  # a new window for both

    # The same world again: other users of the same population served, then events like the training's.
    recommend_for(api, random.Random(2).sample(range(USERS), BASELINE_ROWS))
    post_events(api, live_events(random.Random(12), 300, MIX, range(len(GENRES))))
    stream.deliver()

    second = champion.drift.check()

    assert not second.drifted, [(row.feature, row.effect) for row in second.features if row.verdict == "drifted"]
    assert verdicts(second) == {
        feature.name: FeatureVerdict.STABLE if feature.tested else FeatureVerdict.NOT_TESTED
        for feature in MONITORED_FEATURES
    }
    assert second.served_baseline_taken_at == first.served_baseline_taken_at
    assert second.reference_rows == {"served": BASELINE_ROWS, "events": USERS * EVENTS_PER_USER}


@pytest.mark.usefixtures("baseline_rows")
def test_shifted_traffic_after_the_baseline_is_reported_as_drift(
    api: ApiClient, aws: dict[str, Any], champion: Any
) -> None:
    stream = Stream(aws["kinesis"])
    take_the_baseline(api, stream, champion)
    # Served traffic shifted: every request asks for one genre only.
    recommend_for(api, random.Random(3).sample(range(USERS), BASELINE_ROWS), {"categories": ["Horror"]})
    # Purchases of horror items only, where training saw a 40/20/25/15 mix over four genres.
    post_events(api, live_events(random.Random(13), 300, {"purchase": 1}, range(3, 4)))
    stream.deliver()

    report = champion.drift.check()

    assert report.drifted
    drifted = set(report.drifted_features)
    assert {"event_type", "item_category"} <= drifted
    assert drifted & set(SERVED_FEATURES), drifted  # the served stream too, against its baseline
    assert FeatureVerdict.INSUFFICIENT_DATA not in verdicts(report).values()
    by_feature = {row.feature: row for row in report.features}
    # Total variation: purchases 15% -> 100%, horror items 25% -> 100%.
    assert by_feature["event_type"].effect == pytest.approx(0.85, abs=0.02)
    assert by_feature["item_category"].effect == pytest.approx(0.75, abs=0.02)


@pytest.mark.usefixtures("baseline_rows")
def test_an_online_childs_traffic_counts_in_its_lineages_window(api: ApiClient, champion: Any) -> None:
    trained = champion.registry.load(VERSION)
    child = f"{VERSION}-online-1"
    files = {name: data for name, data in trained.files.items() if name != REFERENCE_FILE}
    metadata = trained.metadata.model_copy(update={"version": child, "parent_version": VERSION}, deep=True)
    champion.registry.register(ModelBundle(metadata, files))
    recommend_for(api, list(range(100)))
    champion.registry.promote(child, reason="an online update")

    assert recommend_for(api, list(range(100, 150))) == child

    window = champion.drift_window.sample(VERSION)
    assert window.rows["served"] == window.observed["served"] == 150  # the trained version's and its child's
    report = champion.drift.check()
    assert (report.model_version, report.reference_version) == (child, VERSION)
    assert {verdicts(report)[name] for name in SERVED_FEATURES} == {FeatureVerdict.BASELINE}


def test_the_drift_route_shows_the_latest_report_and_a_short_history(api: ApiClient, champion: Any) -> None:
    assert api.request("mlops", "GET", DRIFT) == (200, {"latest": None, "history": []})
    started = datetime.now(UTC) - timedelta(hours=1)
    reports = [champion.drift.check(now=started + timedelta(minutes=n)) for n in range(HISTORY_LENGTH + 2)]

    status, reply = api.request("mlops", "GET", DRIFT)

    assert status == 200
    assert reply["latest"] == reports[-1].model_dump(mode="json")
    newest_first = list(reversed(reports))[:HISTORY_LENGTH]
    assert [check["run_id"] for check in reply["history"]] == [report.run_id for report in newest_first]
    assert reply["history"][0] == {
        "run_id": reports[-1].run_id,
        "checked_at": reports[-1].checked_at,
        "model_version": VERSION,
        "reference_version": VERSION,
        "drifted": False,
        "drift_score": 0.0,
        "drifted_features": [],
    }
    assert DRIFT in api.functions["ops"].app.get_openapi_schema().paths  # described in /docs


def test_the_drift_route_answers_503_when_the_reports_cannot_be_read(api: ApiClient, aws: dict[str, Any]) -> None:
    aws["s3"].delete_bucket(Bucket=TEST_BUCKET)
    status, reply = api.request("mlops", "GET", DRIFT)
    assert status == 503 and reply["error"] == "drift_reports_unavailable"
