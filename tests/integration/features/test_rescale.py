"""Rescaling the decay epoch: every decayed value is unchanged, stored values shrink back, updates pause meanwhile."""

from __future__ import annotations

import time

import pytest
import redis

from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.features import store as store_module
from recloop.features.decay import RESCALE_DUE_EXPONENT
from recloop.features.store import FeatureStore, FeatureUpdateAbandonedError
from recloop.tools import rescale_decay

SETTINGS = Settings.from_env({"REDIS_TIMEOUT_SECONDS": "0.1"})


def event(user: str, item: str, t: float, event_id: str | None = None) -> Interaction:
    return Interaction(
        event_id=event_id or f"{user}-{item}", user_id=user, item_id=item, event_type="like", timestamp=t, received_at=t
    )


def snapshot(store: FeatureStore, now: float) -> dict:
    return {
        "engagement": store.user_profile("u1").engagement,
        "popular": [(item, store.clock.decayed(score, now)) for item, score in store.top_popular(5)],
        "neighbours": store.neighbours(["a"], 5)[0],
    }


def test_a_rescale_keeps_every_decayed_value_and_resets_the_stored_scale(redis_client: redis.Redis, monkeypatch):
    monkeypatch.setattr(store_module, "APPLY_DEADLINE_SECONDS", 0.05)
    now = time.time()
    old_epoch = now - (RESCALE_DUE_EXPONENT + 10) * SETTINGS.half_life_seconds  # due for a rescale
    redis_client.hset(Keys.DECAY, "epoch", repr(old_epoch))
    store = FeatureStore(redis_client, SETTINGS)
    for n, item in enumerate(["a", "b", "c", "a", "b", "a"]):
        store.apply(event(f"u{n % 2}", item, now - 3600 * (6 - n), f"e{n}"))
    before = snapshot(store, now)
    assert float(redis_client.hget(Keys.user_features("u1"), "eng")) > 1e200  # the stored scale has grown

    report = store.rescale_decay(now)

    assert report["new_epoch"] == pytest.approx(now, abs=0.01) and report["popularity"] == 3
    after = snapshot(store, now)
    assert after["engagement"] == pytest.approx(before["engagement"], rel=1e-9)
    assert [i for i, _ in after["popular"]] == [i for i, _ in before["popular"]]
    for (_, x), (_, y) in zip(after["popular"], before["popular"], strict=True):
        assert x == pytest.approx(y, rel=1e-9)
    assert [i for i, _ in after["neighbours"]] == [i for i, _ in before["neighbours"]]
    assert float(redis_client.hget(Keys.user_features("u1"), "eng")) < 10
    assert redis_client.hget(Keys.DECAY, "paused_until") is None
    store.apply(event("u9", "z", now + 1, "after"))  # updates resume, on the new epoch
    assert redis_client.hget(Keys.item_features("z"), "cnt:like") == "1"


def test_updates_pause_during_a_rescale_and_leave_no_claim_behind(redis_client: redis.Redis) -> None:
    store = FeatureStore(redis_client, SETTINGS)
    store.apply(event("u1", "a", time.time(), "first"))
    redis_client.hset(Keys.DECAY, "paused_until", repr(time.time() + 60))
    with pytest.raises(FeatureUpdateAbandonedError):
        store.apply(event("u1", "b", time.time(), "during"))
    assert redis_client.get(Keys.user_event_seen("u1", "during")) is None  # released: the consumer need not wait
    assert redis_client.hget(Keys.item_features("b"), "cnt:like") is None


def test_the_tool_reports_the_epochs_age_without_changing_it(env, redis_client: redis.Redis, capsys) -> None:
    redis_client.hset(Keys.DECAY, "epoch", repr(time.time() - 10 * Settings().half_life_seconds))
    assert rescale_decay.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert '"age_half_lives": 10.0' in out and "rescaled" not in out
