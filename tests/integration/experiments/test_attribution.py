"""Attribution of events to experiment impressions, on real Redis: explicit recommendation ids, the latest impression
within the window, negatives, and counting once whatever the retries."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recloop.core.events import Interaction
from recloop.core.settings import AllocationStrategy, Settings
from recloop.experiments.attribution import Attribution, Credit
from recloop.experiments.counters import ExperimentCounters
from recloop.experiments.model import Experiment, ExperimentStatus, Variant
from recloop.experiments.router import RunningExperiments
from recloop.features.store import FeatureStore
from recloop.ingest.producer import IngestService
from recloop.serving.recommender import Arm, Recommendation, Recommender
from tests.support.learning import event

T0 = 1_700_000_000.0
WINDOW = 3_600
SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0", "ATTRIBUTION_WINDOW_SECONDS": str(WINDOW)})
EXPERIMENT_ID = "exp_00000000000a"


def running_experiment(experiment_id: str = EXPERIMENT_ID) -> Experiment:
    return Experiment(
        experiment_id=experiment_id,
        name="control against challenger",
        variants=[
            Variant(variant_id="var_0", name="control", model_version="pop-1"),
            Variant(variant_id="var_1", name="challenger", model_version="pop-2"),
        ],
        allocation_strategy=AllocationStrategy.FIXED_SPLIT,
        traffic_percentage=100.0,
        status=ExperimentStatus.RUNNING,
    )


class Setup:
    def __init__(self, redis_client: redis.Redis) -> None:
        self.store = FeatureStore(redis_client, SETTINGS, historical=True)
        self.store.apply_many([event("fan", f"i{n}", T0 - 1_000 + n) for n in range(6)])
        self.store.apply_many([event(f"other{u}", f"i{n}", T0 - 500 + n) for u in range(3) for n in range(6, 12)])
        self.recommender = Recommender(self.store, SETTINGS)
        self.counters = ExperimentCounters(redis_client)
        self.running: list[Experiment] = [running_experiment()]
        self.attribution = Attribution(
            redis_client, RunningExperiments(lambda: self.running, seconds=0), self.counters, WINDOW
        )

    def shown(self, variant: str, at: float, user: str = "fan") -> Recommendation:
        result = self.recommender.recommend(user, 3, now=at, arm=Arm(EXPERIMENT_ID, variant, None))
        assert result.items
        return result

    def counts(self) -> dict[str, tuple[int, int]]:
        arms = self.counters.counts(EXPERIMENT_ID, ["control", "challenger"])
        return {name: (arm.conversions, arm.negatives) for name, arm in arms.items()}


@pytest.fixture
def setup(redis_client: redis.Redis) -> Setup:
    return Setup(redis_client)


def outcome(
    item: str, kind: str, t: float, event_id: str, recommendation_id: str | None = None, *, user: str = "fan"
) -> Interaction:
    return Interaction(
        event_id=event_id,
        user_id=user,
        item_id=item,
        event_type=kind,
        timestamp=t,
        received_at=t,
        recommendation_id=recommendation_id,
    )


def test_an_event_naming_its_recommendation_is_credited_to_it_once(setup: Setup) -> None:
    shown = setup.shown("challenger", T0)
    item = shown.items[1].item_id
    click = outcome(item, "click", T0 + 60, "evt-1", shown.recommendation_id)

    credits = setup.attribution.attribute([click])
    assert credits == [Credit("evt-1", shown.recommendation_id, EXPERIMENT_ID, "challenger", True)]
    setup.attribution.attribute([click])  # a client retry
    setup.attribution.attribute([click, click])  # and a redelivered batch
    assert setup.counts() == {"control": (0, 0), "challenger": (1, 0)}


def test_without_a_recommendation_id_the_latest_impression_holding_the_item_is_credited(setup: Setup) -> None:
    older = setup.shown("control", T0)
    newer = setup.shown("challenger", T0 + 1_000)
    item = older.items[0].item_id
    assert item in {i.item_id for i in newer.items}

    (credit,) = setup.attribution.attribute([outcome(item, "purchase", T0 + 1_200, "evt-1")])
    assert (credit.recommendation_id, credit.variant) == (newer.recommendation_id, "challenger")
    # An event from before the newer list was shown belongs to the older one.
    (credit,) = setup.attribution.attribute([outcome(item, "like", T0 + 500, "evt-2")])
    assert (credit.recommendation_id, credit.variant) == (older.recommendation_id, "control")
    assert setup.counts() == {"control": (1, 0), "challenger": (1, 0)}


def test_a_dislike_of_a_recommended_item_is_a_negative_and_a_view_is_nothing(setup: Setup) -> None:
    shown = setup.shown("control", T0)
    item = shown.items[0].item_id
    credits = setup.attribution.attribute(
        [outcome(item, "dislike", T0 + 10, "evt-1"), outcome(item, "view", T0 + 10, "evt-2")]
    )
    assert [(c.event_id, c.positive) for c in credits] == [("evt-1", False)]
    assert setup.counts() == {"control": (0, 1), "challenger": (0, 0)}


def test_events_outside_the_window_or_about_other_items_are_not_credited(setup: Setup) -> None:
    shown = setup.shown("control", T0)
    item = shown.items[0].item_id
    not_shown = "i0"  # in the user's history: never recommended to them
    assert not_shown not in {i.item_id for i in shown.items}
    late = [
        outcome(item, "click", T0 + WINDOW + 1, "evt-late"),
        outcome(item, "click", T0 + WINDOW + 1, "evt-late-named", shown.recommendation_id),
    ]
    wrong_item = [
        outcome(not_shown, "click", T0 + 10, "evt-other"),
        outcome(not_shown, "click", T0 + 10, "evt-other-named", shown.recommendation_id),
    ]
    another_user = [outcome(item, "click", T0 + 10, "evt-stranger", user="other0")]
    assert setup.attribution.attribute(late + wrong_item + another_user) == []
    assert setup.attribution.attribute([outcome(item, "click", T0 + WINDOW, "evt-in-time")]) != []
    assert setup.counts() == {"control": (1, 0), "challenger": (0, 0)}


def test_a_recommendation_id_that_names_no_impression_gets_no_fallback(setup: Setup) -> None:
    shown = setup.shown("challenger", T0)
    unknown = "rec_" + "0" * 32  # expired, or never served: the user's latest impression is not credited instead
    assert setup.attribution.attribute([outcome(shown.items[0].item_id, "click", T0 + 5, "evt-1", unknown)]) == []
    assert setup.counts() == {"control": (0, 0), "challenger": (0, 0)}


def test_impressions_of_an_experiment_no_longer_running_are_not_credited(setup: Setup) -> None:
    shown = setup.shown("control", T0)
    setup.running.clear()
    assert setup.attribution.attribute([outcome(shown.items[0].item_id, "click", T0 + 5, "evt-1")]) == []
    assert setup.counts() == {"control": (0, 0), "challenger": (0, 0)}


class AcceptingStream:
    def put(self, events: Any) -> list[str | None]:
        return [None for _ in events]


def test_the_event_path_credits_once_and_survives_an_attribution_failure(setup: Setup, redis_url: str) -> None:
    shown = setup.shown("challenger", T0)
    click = outcome(shown.items[0].item_id, "click", T0 + 5, "evt-1", shown.recommendation_id)
    ingest = IngestService(setup.store, AcceptingStream(), setup.attribution)
    for _ in range(3):  # the first delivery, then a client's retries
        (result,) = ingest.ingest([click])
        assert result.accepted
    assert setup.counts() == {"control": (0, 0), "challenger": (1, 0)}

    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    broken = Attribution(unreachable, setup.attribution.running, setup.counters, WINDOW)
    (result,) = IngestService(setup.store, AcceptingStream(), broken).ingest(
        [outcome(shown.items[1].item_id, "like", T0 + 6, "evt-2")]
    )
    assert result.accepted and result.features_updated
