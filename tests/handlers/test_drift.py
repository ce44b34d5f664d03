"""Drift detection wired into the running system, in process: a trained ranker's version carries its reference,
recommendations and events feed the live window through the recommend and stream functions, and a check compares
the two; GET /api/v1/mlops/drift shows the reports."""

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
from recloop.drift.features import MONITORED_FEATURES
from recloop.drift.model import DriftReport, FeatureVerdict
from recloop.drift.reference import REFERENCE_FILE, ReferenceStore
from recloop.handlers.http.drift import HISTORY_LENGTH
from recloop.ingest.consumer import StreamRecord
from recloop.learning.training import RankerHyperparameters, train_candidate
from recloop.models.bundle import ModelKind
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


def test_traffic_like_the_training_is_tested_on_every_feature(
    api: ApiClient, aws: dict[str, Any], champion: Any
) -> None:
    stream = Stream(aws["kinesis"])
    for u in range(150):
        status, reply = api.recommend(f"user{u}", 10)
        assert status == 200 and reply["model_version"] == VERSION
    post_events(api, live_events(random.Random(11), 400, MIX, range(len(GENRES))))
    assert stream.deliver() == 400

    report = champion.drift.check()

    assert report.model_version == report.reference_version == VERSION
    assert report.window_observed == {"served": 150, "events": 400}
    found = verdicts(report)
    assert set(found) == {feature.name for feature in MONITORED_FEATURES}
    assert FeatureVerdict.INSUFFICIENT_DATA not in found.values(), found
    # The event mix is the training's. The served features are only required to be tested: served right after
    # training, every user has its whole history, where the training queries saw users part-way through theirs.
    assert found["event_type"] is found["item_category"] is FeatureVerdict.STABLE
    # The check started a new window: the next one compares only what comes after it.
    assert champion.drift_window.sample(VERSION).rows == {"served": 0, "events": 0}


def test_shifted_traffic_is_reported_as_drift(api: ApiClient, aws: dict[str, Any], champion: Any) -> None:
    stream = Stream(aws["kinesis"])
    for u in range(150):  # served traffic shifted too: every request asks for one genre only
        status, reply = api.request(
            "recommend", "POST", "/api/v1/recommend", {"user_id": f"user{u}", "categories": ["Horror"]}
        )
        assert status == 200 and reply["model_version"] == VERSION
    # Purchases of horror items only, where training saw a 40/20/25/15 mix over four genres.
    post_events(api, live_events(random.Random(12), 300, {"purchase": 1}, range(3, 4)))
    stream.deliver()

    report = champion.drift.check()

    assert report.drifted
    assert {"event_type", "item_category"} <= set(report.drifted_features)
    assert FeatureVerdict.INSUFFICIENT_DATA not in verdicts(report).values()
    by_feature = {row.feature: row for row in report.features}
    # Total variation: purchases 15% -> 100%, horror items 25% -> 100%.
    assert by_feature["event_type"].effect == pytest.approx(0.85, abs=0.02)
    assert by_feature["item_category"].effect == pytest.approx(0.75, abs=0.02)


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
