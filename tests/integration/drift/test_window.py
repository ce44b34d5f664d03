"""The live window in a real Redis: Algorithm R keeps a uniform sample whatever the traffic, never more than its
capacity, stays uniform with two writers at once, and each reservoir lives in one slot, apart from the others."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import redis
from scipy.stats import chisquare

from recloop.adapters.redis import Keys
from recloop.drift.features import MONITORED_FEATURES, FeatureKind, FeatureSet, MonitoredFeature, Source, event_row
from recloop.drift.window import DriftWindow, served_window
from tests.support.redis_mode import redis_connection

# A two-column served stream: the row's number (to see which rows were kept) and who wrote it.
TRACED = FeatureSet(
    (
        MonitoredFeature(name="row", kind=FeatureKind.NUMERIC, source=Source.SERVED, effect_floor=0.07),
        MonitoredFeature(name="writer", kind=FeatureKind.CATEGORICAL, source=Source.SERVED, effect_floor=0.06),
        MonitoredFeature(name="event_type", kind=FeatureKind.CATEGORICAL, source=Source.EVENTS, effect_floor=0.06),
    )
)


def offer(window: DriftWindow, first: int, count: int, writer: int, batch: int = 100) -> None:
    for start in range(first, first + count, batch):
        window.observe_served("v1", [[n, writer] for n in range(start, min(start + batch, first + count))])


def test_the_reservoir_fills_then_stays_at_its_capacity(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED, capacity=1_000, rng=random.Random(1))
    offer(window, 0, 600, writer=0)
    partial = window.sample("v1")
    assert partial.rows[Source.SERVED] == 600 and partial.observed[Source.SERVED] == 600
    assert sorted(partial.sample.numeric["row"].tolist()) == list(range(600))  # all kept while filling

    offer(window, 600, 11_400, writer=0)
    full = window.sample("v1")
    assert full.rows[Source.SERVED] == 1_000 and full.observed[Source.SERVED] == 12_000
    assert redis_client.hlen(Keys.drift_reservoir(served_window("v1"))) == 1_000
    assert len(np.unique(full.sample.numeric["row"])) == 1_000


def test_algorithm_r_keeps_every_row_with_the_same_chance(redis_client: redis.Redis) -> None:
    """500 kept of 20,000 offered: the kept rows' positions are uniform over the stream (chi-square over 20 bins).
    Keeping the first or the latest rows, or favouring late ones, fails this by far."""
    window = DriftWindow(redis_client, TRACED, capacity=500, rng=random.Random(7))
    offer(window, 0, 20_000, writer=0, batch=250)

    kept = window.sample("v1").sample.numeric["row"]
    observed = np.bincount((kept // 1_000).astype(int), minlength=20)

    assert len(kept) == 500
    assert chisquare(observed).pvalue > 0.001
    assert observed[:10].sum() == pytest.approx(250, abs=45)  # first half of the stream: half of the sample


def test_two_writers_at_once_keep_the_count_exact_and_the_sample_uniform(redis_url: str, redis_client: redis.Redis):
    def write(writer: int) -> None:
        client = redis_connection(redis_url)
        offer(DriftWindow(client, TRACED, capacity=1_000, rng=random.Random(writer)), 0, 10_000, writer, batch=50)
        client.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    window = DriftWindow(redis_client, TRACED, capacity=1_000).sample("v1")
    assert window.observed[Source.SERVED] == 20_000  # no row counted twice or lost
    assert window.rows[Source.SERVED] == 1_000
    writers = window.sample.categorical["writer"]
    assert abs(writers["1"] - 500) < 80  # each writer half of the sample (binomial sd ~16 rows)
    # and each writer's rows uniform over its own stream
    kept = window.sample.numeric["row"]
    assert chisquare(np.bincount((kept // 1_000).astype(int), minlength=10)).pvalue > 0.001


def test_versions_have_separate_windows_and_events_one_shared(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED, rng=random.Random(3))
    window.observe_served("v1", [[1, 0], [2, 0]])
    window.observe_served("v2", [[3, 1]])
    window.observe_events([("view",), ("click",)])

    v1, v2 = window.sample("v1"), window.sample("v2")
    assert sorted(v1.sample.numeric["row"].tolist()) == [1, 2] and v2.sample.numeric["row"].tolist() == [3]
    assert v1.sample.categorical["event_type"] == v2.sample.categorical["event_type"] == {"view": 1, "click": 1}


def test_a_reset_starts_a_new_window_of_the_named_streams_only(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED, rng=random.Random(4))
    window.observe_served("v1", [[1, 0]])
    window.observe_events([("view",)])

    window.reset("v1", [Source.SERVED])
    after = window.sample("v1")
    assert after.rows == {Source.SERVED: 0, Source.EVENTS: 1}
    assert after.observed == {Source.SERVED: 0, Source.EVENTS: 1}
    window.reset("v1")
    assert window.sample("v1").rows == {Source.SERVED: 0, Source.EVENTS: 0}


def test_offering_rides_the_callers_pipeline(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED, rng=random.Random(5))
    pipe = redis_client.pipeline(transaction=False)
    window.observe_events([("like",)], pipeline=pipe)
    assert window.sample("v1").rows[Source.EVENTS] == 0  # nothing sent yet
    pipe.execute()
    assert window.sample("v1").sample.categorical["event_type"] == {"like": 1}


def test_a_scored_request_offers_one_of_its_candidates_with_its_score(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, MONITORED_FEATURES, rng=random.Random(6))
    width = len(MONITORED_FEATURES.columns(Source.SERVED)) - 1
    rows = np.arange(5 * width, dtype=np.float32).reshape(5, width)  # candidate n's mf_score is n * width
    scores = np.array([10.0, 11.0, 12.0, 13.0, 14.0])

    window.observe_scored("v1", rows, scores)
    window.observe_scored("v1", rows[:0], scores[:0])  # nothing scored: nothing offered
    window.observe_events([event_row("view", {"drama"})])

    sample = window.sample("v1")
    assert sample.rows == {Source.SERVED: 1, Source.EVENTS: 1}
    candidate = int(sample.sample.numeric["mf_score"][0]) // width
    assert sample.sample.numeric["prediction_score"].tolist() == [10.0 + candidate]
    assert sample.sample.categorical["item_category"] == {"drama": 1}


def test_reservoirs_expire_when_no_longer_offered_rows(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED, ttl_seconds=600, rng=random.Random(8))
    window.observe_served("v1", [[1, 0]])
    for key in (Keys.drift_reservoir(served_window("v1")), Keys.drift_reservoir_seen(served_window("v1"))):
        assert 0 < redis_client.ttl(key) <= 600


def test_rows_of_the_wrong_width_are_refused(redis_client: redis.Redis) -> None:
    window = DriftWindow(redis_client, TRACED)
    with pytest.raises(ValueError, match="served row"):
        window.observe_served("v1", [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="event row"):
        window.observe_events([("view", "extra")])


def test_a_reservoir_is_one_cluster_slot() -> None:
    from redis.crc import key_slot

    for window in (served_window("lgbm-20261201T120000Z-ab12cd"), "events"):
        assert key_slot(Keys.drift_reservoir(window).encode()) == key_slot(Keys.drift_reservoir_seen(window).encode())
