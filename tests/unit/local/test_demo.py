"""The demo `make dev` loads: traffic the API accepts, and two trained versions in the registry, one champion."""

from __future__ import annotations

import time
from typing import Any

import redis

from local.demo import DEMO_ITEMS, DEMO_USERS, demo_data, interactions, promote_demo_champion, train_demo_models
from recloop.core.events import K
from recloop.core.settings import Settings
from recloop.handlers.http.schemas import InteractionIn, ItemsIn
from recloop.models.bundle import ModelKind, OnlinePosition


def test_demo_traffic_is_what_the_api_accepts_and_each_event_is_sent_once() -> None:
    demo = demo_data()
    ItemsIn.model_validate({"items": demo.items})
    for event in demo.events:
        InteractionIn.model_validate(event)
    assert len({event["event_id"] for event in demo.events}) == len(demo.events)
    assert {event["user_id"] for event in demo.events} == {f"demo_user_{n}" for n in range(DEMO_USERS)}
    assert max(event["timestamp"] for event in demo.events) < time.time()
    # The live part is the newest traffic, after everything the versions are trained on.
    assert demo.history + demo.live == demo.events
    assert max(e["timestamp"] for e in demo.history) <= min(e["timestamp"] for e in demo.live)


def test_demo_trains_an_mf_and_an_lgbm_version_and_makes_the_lgbm_champion(
    aws: dict[str, Any], redis_client: redis.Redis
) -> None:
    from recloop.container import get_container

    registry = get_container().registry
    history = demo_data().history
    learned = OnlinePosition(buffer_id="demo", sequence=len(history))
    models = promote_demo_champion(registry, train_demo_models(interactions(history), registry, Settings(), learned))

    assert [v.kind for v in models.versions] == [ModelKind.MF, ModelKind.LGBM]
    assert {m.version for m in registry.list_versions()} == {v.version for v in models.versions}
    lgbm = models.versions[1]
    assert models.champion == lgbm.version
    # The ids the guide's experiment curl names: v1.0 the champion (lgbm), v2.0 the challenger.
    assert (lgbm.version, models.versions[0].version) == ("v1.0", "v2.0")
    assert registry.champion(use_cache=False).version == lgbm.version
    assert "demo" in registry.history()[0]["reason"]
    # Online updates start after the history the versions were trained on.
    assert all(registry.get(v.version).online_position == learned for v in models.versions)
    # Both learned the taste groups: far above the hit rate of a list of K random items.
    chance = K / DEMO_ITEMS
    assert all(v.holdout_hr_at_10 > 2 * chance for v in models.versions)
    assert lgbm.holdout_hr_at_10 > models.versions[0].holdout_hr_at_10
