"""The replay harness in process: ratios over nothing, training's holdout check on the offline store."""

from __future__ import annotations

import math

import pytest

from recloop.core.events import EventType, Interaction
from recloop.core.settings import Settings
from recloop.learning.evaluation import (
    FeatureStoreSystem,
    ProtocolViolationError,
    ReplayContext,
    ReplayRun,
    default_curve_window,
    evaluate_offline,
    offline_store,
    ratio,
    rolling_curve,
    warmup_split,
)
from recloop.learning.training import comparable_hr, train_candidate
from recloop.models.bundle import ModelKind

SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
T0 = 1_700_000_000.0


def event(n: int, user: str, item: str, kind: str) -> Interaction:
    return Interaction(
        event_id=f"e{n}", user_id=user, item_id=item, event_type=EventType(kind), timestamp=T0 + n, received_at=T0 + n
    )


def events(*rows: tuple[str, str, str], start: int = 0) -> list[Interaction]:
    return [event(start + n, *row) for n, row in enumerate(rows)]


# X is the most popular item of the history; u had viewed it.
HISTORY = events(("a", "X", "purchase"), ("b", "X", "purchase"), ("a", "Y", "click"), ("u", "X", "view"))


def test_a_ratio_over_nothing_is_not_measured() -> None:
    assert ratio(1, 3) == 0.333333
    assert ratio(0, 4) == 0.0
    assert ratio(0, 0) is None


def test_warmup_is_the_first_half() -> None:
    warmup, stream = warmup_split(HISTORY + HISTORY[:1])
    assert (len(warmup), len(stream)) == (2, 3)


def test_offline_evaluation_scores_known_and_new_users() -> None:
    # u buys Y (X excluded: Y is rank 1), w is new and likes X (rank 1), a buys Z (nobody saw Z: a miss).
    holdout = events(("u", "Y", "purchase"), ("w", "X", "like"), ("a", "Z", "purchase"), start=10)
    metrics = evaluate_offline(SETTINGS, HISTORY, holdout)
    assert metrics == {
        "hr_at_10": pytest.approx(2 / 3, abs=1e-6),
        "ndcg_at_10": pytest.approx(2 / 3, abs=1e-6),
        "hr_at_10_known_users": 0.5,
        "ndcg_at_10_known_users": 0.5,
        "coverage": pytest.approx(2 / 3, abs=1e-6),  # X and Y of X, Y, Z
        "positives_evaluated": 3,
        "positives_known_users": 2,
    }


def test_a_holdout_without_positives_measures_nothing() -> None:
    metrics = evaluate_offline(SETTINGS, HISTORY, events(("u", "Y", "view"), ("a", "X", "click"), start=10))
    assert metrics["hr_at_10"] is None and metrics["ndcg_at_10"] is None
    assert metrics["hr_at_10_known_users"] is None
    assert metrics["coverage"] == 0.0  # a catalogue, none of it recommended
    assert metrics["positives_evaluated"] == 0
    assert comparable_hr(metrics) == 0.0


def test_training_keeps_only_measured_metrics_and_compares_nothing_as_zero() -> None:
    history = [event(n, f"u{n % 7}", f"i{n % 5}", "purchase" if n % 3 else "view") for n in range(60)]
    holdout = [event(60 + n, f"u{n}", f"i{n}", "view") for n in range(10)]
    result = train_candidate(ModelKind.POPULARITY, history + holdout, SETTINGS, "popularity-1", holdout_fraction=0.125)
    assert result.candidate_metrics["hr_at_10"] is None
    assert result.candidate_hr == 0.0 and result.champion_hr is None
    recorded = result.bundle.metadata.metrics
    assert "holdout_hr_at_10" not in recorded
    assert recorded["holdout_positives_evaluated"] == 0.0
    assert all(isinstance(value, float) and not math.isnan(value) for value in recorded.values())


class RepeatsHistory(FeatureStoreSystem):
    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        return list(self.context.store.user_profile(user_id).history)[:k]


def test_the_harness_stops_a_system_recommending_seen_items() -> None:
    store = offline_store(SETTINGS, HISTORY)
    context = ReplayContext(SETTINGS, store.redis, store)
    run = ReplayRun("repeats", context, RepeatsHistory(context))
    run.remember(HISTORY)
    with pytest.raises(ProtocolViolationError, match="already seen"):
        run.stream(events(("u", "Y", "purchase"), start=10))


# Six positives in stream order: hit at rank 1, miss, rank 3, miss, rank 1, rank 2.
RANKS = [1, None, 3, None, 1, 2]


def test_a_rolling_curve_scores_each_window_of_positives() -> None:
    curve = rolling_curve(RANKS, window=2)
    assert curve["window"] == 2
    assert curve["positives"] == [2, 3, 4, 5, 6]  # full windows only
    assert curve["hr_at_10"] == [0.5, 0.5, 0.5, 0.5, 1.0]
    third, sixth = 1 / math.log2(4), 1 / math.log2(3)
    assert curve["ndcg_at_10"] == pytest.approx([0.5, third / 2, third / 2, 0.5, (1 + sixth) / 2], abs=1e-6)


def test_a_rolling_curve_keeps_a_few_evenly_spaced_points() -> None:
    curve = rolling_curve(RANKS, window=2, points=3)
    assert curve["positives"] == [2, 4, 6]
    assert curve["hr_at_10"] == [0.5, 0.5, 1.0]
    long = rolling_curve([1, None] * 50_000, window=1_000)
    assert len(long["positives"]) == 200 and long["positives"][-1] == 100_000
    assert set(long["hr_at_10"]) == {0.5}


def test_a_window_longer_than_the_stream_gives_no_points() -> None:
    assert rolling_curve(RANKS, window=7) == {"window": 7, "positives": [], "hr_at_10": [], "ndcg_at_10": []}
    assert default_curve_window(5) == 10 and default_curve_window(12_345) == 1_234
