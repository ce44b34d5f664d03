"""The demo that `make dev` loads: a generated catalogue in genres, users in taste groups that each like two
genres, and two model versions trained on that traffic with the product's own training code, registered in the
stack's registry, one of them champion. So the loop runs from the first minute: recommendations come from a
trained champion, online updates publish its children, and an experiment has two real versions to compare.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recloop.core.events import Interaction
from recloop.core.progress import Progress, no_progress
from recloop.core.settings import Settings
from recloop.learning.training import CategoriesOf, train_candidate
from recloop.models.bundle import ModelKind, OnlinePosition
from recloop.registry.model_registry import ModelRegistry

CATEGORIES = ["Drama", "Comedy", "Action", "Documentary", "Horror", "Romance", "Sci-Fi", "Animation"]
DEMO_ITEMS = 240
DEMO_USERS = 300
TASTE_GROUPS = 12
# Most of a group's picks fall among its first few dozen favourites.
FAVOURITES_SCALE = 12.0
# The demo's traffic is spread over the hours before bring-up, so recency and time splits have something to order.
DEMO_SPAN_SECONDS = 48 * 3600
# The ranker (lgbm) learns from the last part of the traffic (RankerHyperparameters.label_fraction): ~25 events a
# user give it a few thousand labelled queries, enough for its leaves, while both versions train in seconds.
EVENTS_PER_USER = (15, 35)
EVENT_KINDS = ["view", "click", "like", "purchase", "dislike"]
EVENT_KIND_WEIGHTS = [40, 30, 15, 10, 5]
# The newest events are sent after the champion is promoted, as live traffic: more than the online buffer holds
# (1000 by default), so an online update runs by itself (it publishes a child when the held-out error improves), and
# the trigger has events left.
LIVE_EVENTS = 1500
# The version serving from the start: the ranker re-ranks the MF's candidates with live features as well.
CHAMPION_KIND = ModelKind.LGBM
# The guide's experiment curl names "v1.0" (its champion, a LightGBM) and "v2.0" (its collaborative-filtering
# challenger): the demo's versions take these ids so that curl works verbatim. Versions trained later (online updates,
# retraining) get generated ids.
DEMO_VERSION_IDS = {ModelKind.LGBM: "v1.0", ModelKind.MF: "v2.0"}


@dataclass(frozen=True)
class DemoData:
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]  # as the events API takes them, oldest first, each with its time and event id

    @property
    def history(self) -> list[dict[str, Any]]:
        """What the versions are trained on."""
        return self.events[:-LIVE_EVENTS]

    @property
    def live(self) -> list[dict[str, Any]]:
        """What arrives once the champion serves: news to online learning."""
        return self.events[-LIVE_EVENTS:]


def interactions(events: Sequence[dict[str, Any]]) -> list[Interaction]:
    """Events as the API accepts them, for training on exactly what was sent."""
    return [Interaction(**event, received_at=event["timestamp"]) for event in events]


def demo_data(seed: int = 42, now: float | None = None) -> DemoData:
    """Items item_0 .. in eight genres; users demo_user_0 .. in taste groups.

    A taste group likes two genres, and within them its own favourites, which other groups of the same genres
    like less: who liked what says more about a user's next item than popularity does, so a model has something
    to learn.
    """
    rng = random.Random(seed)
    end = time.time() - 60 if now is None else now  # a minute back: the API refuses times in the future
    items = [
        {"item_id": f"item_{n}", "categories": [CATEGORIES[n % len(CATEGORIES)]], "title": f"Demo title {n}"}
        for n in range(DEMO_ITEMS)
    ]
    by_genre = {genre: [i["item_id"] for i in items if i["categories"][0] == genre] for genre in CATEGORIES}
    tastes = []
    for _ in range(TASTE_GROUPS):
        liked = [item for genre in rng.sample(CATEGORIES, 2) for item in by_genre[genre]]
        rng.shuffle(liked)  # the group's order of preference
        tastes.append(liked)
    events = []
    for user in range(DEMO_USERS):
        liked = tastes[user % TASTE_GROUPS]
        for _ in range(rng.randint(*EVENTS_PER_USER)):
            if rng.random() < 0.85:
                item = liked[min(int(rng.expovariate(1 / FAVOURITES_SCALE)), len(liked) - 1)]
            else:
                item = rng.choice(items)["item_id"]
            events.append(
                {
                    "user_id": f"demo_user_{user}",
                    "item_id": item,
                    "event_type": rng.choices(EVENT_KINDS, EVENT_KIND_WEIGHTS)[0],
                    "timestamp": round(end - rng.random() * DEMO_SPAN_SECONDS, 3),
                }
            )
    events.sort(key=lambda event: event["timestamp"])
    for n, event in enumerate(events):
        event["event_id"] = f"demo_{int(end)}_{n}"  # a re-sent batch is recognised, not counted twice
    return DemoData(items, events)


@dataclass(frozen=True)
class DemoVersion:
    version: str
    kind: ModelKind
    holdout_hr_at_10: float
    train_seconds: float


@dataclass(frozen=True)
class DemoModels:
    versions: list[DemoVersion]
    champion: str


def train_demo_models(
    events: Sequence[Interaction],
    registry: ModelRegistry,
    settings: Settings,
    online_position: OnlinePosition | None = None,
    categories_of: CategoriesOf | None = None,
    *,
    progress: Progress = no_progress,
) -> list[DemoVersion]:
    """An mf and an lgbm version trained on the demo traffic and registered.

    `online_position`: where `events` end in the online-learning buffer; online updates of these versions start
    after it instead of learning the same events again. `categories_of`: the catalogue's categories (the feature
    store's), for the versions' drift references.
    """
    trained = []
    for kind in (ModelKind.MF, ModelKind.LGBM):
        started = time.perf_counter()
        result = train_candidate(
            kind,
            events,
            settings,
            DEMO_VERSION_IDS[kind],
            holdout_fraction=0.1,
            categories_of=categories_of,
            progress=progress,
        )
        result.bundle.metadata.online_position = online_position
        registry.register(result.bundle)
        trained.append(
            DemoVersion(
                result.bundle.metadata.version,
                kind,
                round(result.candidate_hr, 4),
                round(time.perf_counter() - started, 1),
            )
        )
    return trained


def promote_demo_champion(
    registry: ModelRegistry, versions: list[DemoVersion], champion_kind: ModelKind = CHAMPION_KIND
) -> DemoModels:
    champion = next(v for v in versions if v.kind is champion_kind)
    registry.promote(
        champion.version, reason=f"demo: trained on the demo traffic, holdout HR@10 {champion.holdout_hr_at_10:.4f}"
    )
    return DemoModels(versions, champion.version)
