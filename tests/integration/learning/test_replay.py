"""The replay harness (recloop.learning.evaluation) and the benchmark on it (bench.replay), over a real Redis."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bench.configs import CONFIGS, resolve
from recloop.core.events import EventType, Interaction
from recloop.handlers.http.schemas import InteractionIn
from recloop.learning.datasets import load_dataset, load_events, rating_event
from recloop.learning.evaluation import (
    FeatureStoreSystem,
    Judgement,
    ProtocolViolationError,
    replay_report,
    replay_system,
)

# The tests that reach Redis: deselected in the cluster run.
REPLAY_HARNESS = pytest.mark.single_node("the offline replay harness connects one Redis by its URL alone")

ROOT = Path(__file__).resolve().parents[3]  # the repository
MOVIETWEETINGS = ROOT.parent / "shared" / "data" / "movietweetings-100k"
T0 = 1_700_000_000
T1997 = 852_076_800  # 1997-01-01


def replay_config(
    name: str, events: list[Interaction], redis_url: str, trace: list[Judgement] | None = None
) -> dict[str, Any]:
    return replay_system(name, resolve(name), events, redis_url, trace=trace)


def write_csv(path: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "event_type", "timestamp"])
        writer.writerows(rows)
    return path


# Warm-up (first 6): X is by far the most popular item, u has seen X.
# Stream (last 6): u buys X (seen before, so excluded: a miss however popular X is), u buys Y (rank 1
# once X is excluded), v likes Y (X is rank 1, Y rank 2), w is new and likes W (nobody saw W: a miss).
HAND_MADE = [
    ("a", "X", "purchase", T0 + 1),
    ("b", "X", "purchase", T0 + 2),
    ("c", "X", "purchase", T0 + 3),
    ("a", "Y", "click", T0 + 4),
    ("b", "Y", "click", T0 + 5),
    ("u", "X", "view", T0 + 6),
    ("u", "X", "purchase", T0 + 7),
    ("u", "Y", "purchase", T0 + 8),
    ("v", "Z", "view", T0 + 9),
    ("v", "Y", "like", T0 + 10),
    ("n", "X", "dislike", T0 + 11),
    ("w", "W", "like", T0 + 12),
]


def clustered_rows(seed: int = 7, t0: float = T0) -> list[tuple[str, str, str, float]]:
    """20 users engage with items a0-a14, 20 with b0-b14: a global ranking mixes both clusters."""
    rng = random.Random(seed)
    users = [(cluster, f"u{cluster}{n}") for cluster in "ab" for n in range(20)]
    kinds = ["view", "click", "click", "like", "like", "purchase", "dislike"]
    rows = []
    for _ in range(8):
        for cluster, user in users:
            rows.append((user, f"{cluster}{rng.randrange(15)}", rng.choice(kinds)))
    rng.shuffle(rows)
    # Listed out of time order on purpose (the loader sorts), with some equal timestamps.
    return [(user, item, kind, t0 + 60 * (n // 2)) for n, (user, item, kind) in reversed(list(enumerate(rows)))]


def test_ratings_map_to_event_types() -> None:
    assert [rating_event(r) for r in range(11)] == [
        *[EventType.DISLIKE] * 3,
        *[EventType.VIEW] * 2,
        *[EventType.CLICK] * 2,
        *[EventType.LIKE] * 2,
        *[EventType.PURCHASE] * 2,
    ]


def test_loader_sorts_by_time_stably_and_limits(tmp_path: Path) -> None:
    rows = [("u1", "i1", "view", T0 + 5), ("u2", "i2", "click", T0 + 1), ("u3", "i3", "like", T0 + 1)]
    events = load_events(write_csv(tmp_path / "e.csv", rows))
    assert [e.user_id for e in events] == ["u2", "u3", "u1"]
    assert len({e.event_id for e in events}) == 3
    assert [e.user_id for e in load_events(tmp_path / "e.csv", limit=2)] == ["u2", "u3"]


@REPLAY_HARNESS
def test_hits_exclude_seen_items_and_ndcg_is_one_at_rank_one(tmp_path: Path, redis_url: str) -> None:
    events = load_events(write_csv(tmp_path / "hand.csv", HAND_MADE))
    trace: list[Judgement] = []
    result = replay_config("popularity", events, redis_url, trace=trace)

    assert [(j.user_id, j.item_id, j.known_user, j.rank) for j in trace] == [
        ("u", "X", True, None),
        ("u", "Y", True, 1),
        ("v", "Y", True, 2),
        ("w", "W", False, None),
    ]
    assert trace[0].recommended == ("Y",)  # X, the most popular, was excluded: u had viewed it
    assert trace[2].recommended == ("X", "Y")  # v's own Z excluded
    assert result["positives_evaluated"] == 4
    assert result["positives_known_users"] == 3
    assert result["hr_at_10"] == 0.5
    assert result["ndcg_at_10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 4, abs=1e-6)
    assert result["hr_at_10_known_users"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["ndcg_at_10_known_users"] == pytest.approx((1.0 + 1 / math.log2(3)) / 3, abs=1e-6)


@REPLAY_HARNESS
def test_ndcg_is_one_when_every_hit_is_at_rank_one(tmp_path: Path, redis_url: str) -> None:
    rows = [("a", "X", "purchase", T0 + 1), ("b", "X", "like", T0 + 2)]
    result = replay_config("popularity", load_events(write_csv(tmp_path / "one.csv", rows)), redis_url)
    assert (result["hr_at_10"], result["ndcg_at_10"], result["positives_evaluated"]) == (1.0, 1.0, 1)
    assert result["positives_known_users"] == 0
    assert result["hr_at_10_known_users"] is None


@REPLAY_HARNESS
def test_counts_and_realtime_beats_popularity_on_clusters(tmp_path: Path, redis_url: str) -> None:
    events = load_events(write_csv(tmp_path / "clusters.csv", clustered_rows()))
    split = len(events) // 2
    seen_users = {e.user_id for e in events[:split]}
    positives = known = 0
    for event in events[split:]:
        if event.event_type in (EventType.LIKE, EventType.PURCHASE):
            positives += 1
            known += event.user_id in seen_users
        seen_users.add(event.user_id)

    results = {name: replay_config(name, events, redis_url) for name in ("popularity", "realtime", "implicit_als")}
    for result in results.values():
        assert result["positives_evaluated"] == positives
        assert result["positives_known_users"] == known
    assert positives > 50
    assert results["realtime"]["hr_at_10"] > results["popularity"]["hr_at_10"] + 0.1
    assert results["realtime"]["ndcg_at_10"] > results["popularity"]["ndcg_at_10"]
    assert results["realtime"]["details"]["requests_by_model"]["cooccurrence"] > 0


@REPLAY_HARNESS
def test_a_log_from_the_1990s_replays(tmp_path: Path, redis_url: str) -> None:
    # Offline data keeps its own dates: the live API's lower bound on timestamps (2000) must not stop a replay.
    rows = clustered_rows(t0=T1997)
    with pytest.raises(ValidationError, match="after 2000-01-01"):
        InteractionIn(user_id="u", item_id="i", event_type="like", timestamp=rows[0][3])
    dataset = load_dataset(write_csv(tmp_path / "1997.csv", rows))
    assert dataset.events[0].timestamp == T1997
    assert max(e.timestamp for e in dataset.events) < 883_612_800  # still 1997

    report = replay_report(dataset, {name: resolve(name) for name in ("popularity", "realtime")}, redis_url)
    assert report["dataset"]["events"] == len(rows)
    for name, result in report["configs"].items():
        assert result["positives_evaluated"] == report["dataset"]["stream_positives"] > 50, name
        assert isinstance(result["hr_at_10"], float) and 0.0 < result["hr_at_10"] <= 1.0, name
        assert isinstance(result["ndcg_at_10"], float) and 0.0 < result["ndcg_at_10"] <= result["hr_at_10"], name
    assert report["configs"]["realtime"]["hr_at_10"] > report["configs"]["popularity"]["hr_at_10"]


class RepeatsHistory(FeatureStoreSystem):
    """A broken configuration: recommends what the user already had."""

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        return list(self.context.store.user_profile(user_id).history)[:k]


@REPLAY_HARNESS
def test_a_config_recommending_seen_items_is_stopped(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CONFIGS, "repeats_history", RepeatsHistory)
    events = load_events(write_csv(tmp_path / "hand.csv", HAND_MADE))
    with pytest.raises(ProtocolViolationError, match="already seen"):
        replay_config("repeats_history", events, redis_url)


@REPLAY_HARNESS
def test_movietweetings_first_3000_events(redis_url: str) -> None:
    # The shared data lives beside the checkout (../shared), in CI as in development: missing, it is a failure.
    assert (MOVIETWEETINGS / "SHA256SUMS").exists(), (
        f"shared data not present at {MOVIETWEETINGS} (expected beside the repository, in ../shared/data)"
    )
    for line in (MOVIETWEETINGS / "SHA256SUMS").read_text().split("\n"):
        if line.strip():
            expected, name = line.split()
            assert hashlib.sha256((MOVIETWEETINGS / name).read_bytes()).hexdigest() == expected, name

    configs = ["popularity", "trending", "realtime", "implicit_als"]
    command = [sys.executable, "-m", "bench.replay", "--movietweetings", str(MOVIETWEETINGS), "--limit", "3000"]
    command += [arg for name in configs for arg in ("--config", name)] + ["--json"]
    done = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    dataset = report["dataset"]
    assert dataset["events"] == 3000
    assert dataset["warmup_events"] == dataset["stream_events"] == 1500
    assert "ratings.dat" in dataset["sha256_verified"]
    assert sum(dataset["event_types"].values()) == 3000
    assert list(report["configs"]) == configs
    for result in report["configs"].values():
        for name in ("hr_at_10", "ndcg_at_10", "hr_at_10_known_users", "ndcg_at_10_known_users"):
            assert 0.0 <= result[name] <= 1.0, name
        assert result["ndcg_at_10"] <= result["hr_at_10"]
        assert result["positives_evaluated"] == dataset["stream_positives"] > 0
        assert result["positives_known_users"] == dataset["stream_positives_known_users"] > 0
        assert result["wall_seconds"] > 0
        assert result["hr_at_10"] <= dataset["hr_at_10_upper_bound"]
    # `trending` ranks for everyone what the recommender serves a cold user: the same hits on their positives.
    cold = dataset["stream_positives"] - dataset["stream_positives_known_users"]
    served = report["configs"]["realtime"]["details"]["requests_by_model"]
    assert served["trending"] == cold > 0
    cold_hits = {name: r["hits"] - r["hits_known_users"] for name, r in report["configs"].items()}
    assert cold_hits["trending"] == cold_hits["realtime"] > 0


def shifting_tastes(events: int = 1000, seed: int = 3) -> list[Interaction]:
    """60 users in 3 taste groups, one event every 3 minutes; halfway through, each group's items are replaced by
    new ones (a catalogue refresh: the warm-up's model knows none of them)."""
    rng = random.Random(seed)
    kinds = ["view", "click", "like", "like", "purchase"]
    out = []
    for n in range(events):
        user = rng.randrange(60)
        era = "new" if n >= events // 2 else "old"
        item = f"{era}-g{user % 3}-{rng.randrange(12)}"
        t = T0 + 180 * n
        out.append(InteractionIn(user_id=f"u{user}", item_id=item, event_type=rng.choice(kinds)).to_event(t))
    return out


@REPLAY_HARNESS
def test_full_loop_retrains_through_the_products_triggers_on_the_datas_clock(redis_url: str) -> None:
    events = shifting_tastes()
    result = replay_system(
        "full_loop", resolve("full_loop"), events, redis_url, overrides={"MIN_NEW_INTERACTIONS": "200"}
    )
    details = result["details"]

    stream = events[len(events) // 2 :]
    # The drift check ran once per hour boundary the stream crossed (the schedule's rate, on the data's clock).
    hours = {int(e.timestamp // 3600) for e in stream}
    assert details["drift_checks"] == len(hours) - 1
    retrains = details["retrains"]
    assert retrains, details["retrain_metrics"]
    assert details["retrain_metrics"]["total_retrains"] == len(retrains)
    assert details["retrain_metrics"]["failed_retrains"] == 0
    for run in retrains:
        assert run["trigger"] in ("drift", "volume", "performance", "schedule")
        # Named after its trigger and the data's time (2023), as the state machine's executions are.
        assert run["execution_name"].startswith(f"retrain-{run['trigger']}-2023")
        assert len(events) // 2 < run["events"] <= len(events)  # the warm-up and the stream so far
        # The gate compared it with the model in service on the same holdout, and said so.
        assert run["gate"].startswith("passed" if run["promoted"] else "refused"), run["gate"]
    counted = details["retrain_metrics"]
    assert counted["volume_triggered_retrains"] + counted["drift_triggered_retrains"] >= 1
