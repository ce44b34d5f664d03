"""Real-time feature store on Redis.

Applying an event costs two pipelined round trips: the first claims the event id (so a retried
event is counted once) and reads the user's recent items; the second updates user, item, global
popularity and item-to-item co-occurrence together.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.events import CONVERSION_EVENTS, EVENT_WEIGHTS, EventType, Interaction
from recloop.core.settings import Settings
from recloop.features.decay import DecayClock
from recloop.features.trending import TrendingRanking

# How long an event id is remembered for de-duplication of client and stream retries.
EVENT_ID_TTL_SECONDS = 7 * 86_400


@dataclass(frozen=True)
class RecentInteraction:
    item_id: str
    event_type: EventType
    timestamp: float

    @property
    def weight(self) -> float:
        return EVENT_WEIGHTS[self.event_type]

    def encode(self) -> str:
        return f"{self.item_id}|{self.event_type.value}|{self.timestamp:.3f}"

    @staticmethod
    @lru_cache(maxsize=65_536)
    def decode(raw: str) -> RecentInteraction:
        # Cached: an entry is read again by each of the user's next events and requests.
        item_id, event_type, timestamp = raw.rsplit("|", 2)
        return RecentInteraction(item_id, EventType(event_type), float(timestamp))


@dataclass
class UserProfile:
    """What the store knows about one user at request time."""

    user_id: str
    history: dict[str, float] = field(default_factory=dict)  # item -> cumulative weight
    recent: list[RecentInteraction] = field(default_factory=list)  # newest first
    event_counts: dict[str, int] = field(default_factory=dict)
    engagement: float = 0.0  # decayed sum of event weights
    last_event_time: float | None = None

    @property
    def is_cold(self) -> bool:
        return not self.history


@dataclass(frozen=True)
class ItemMetadata:
    item_id: str
    categories: tuple[str, ...] = ()
    title: str | None = None


class FeatureStore:
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.redis = redis_client
        self.settings = settings
        self.clock = DecayClock(redis_client, settings.half_life_seconds)
        self.trending = TrendingRanking(redis_client, settings.trending_half_life_seconds)

    # -- writes ---------------------------------------------------------------------------------

    def apply(self, event: Interaction) -> bool:
        """Update every feature the event touches. Returns False if the event id was seen before."""
        return self.apply_many([event])[0]

    def apply_many(self, events: Sequence[Interaction]) -> list[bool]:
        """Apply events in order; each returned flag says whether that event was new."""
        if not events:
            return []
        window = self.settings.cooccurrence_window
        claim = self.redis.pipeline(transaction=False)
        for event in events:
            claim.set(Keys.user_event_seen(event.user_id, event.event_id), 1, nx=True, ex=EVENT_ID_TTL_SECONDS)
            claim.lrange(Keys.user_recent(event.user_id), 0, window - 1)
        replies = claim.execute()

        applied: list[bool] = []
        recent_by_user: dict[str, list[RecentInteraction]] = {}
        update = self.redis.pipeline(transaction=False)
        for index, event in enumerate(events):
            is_new = bool(replies[2 * index])
            applied.append(is_new)
            if not is_new:
                continue
            # Events of one user in one batch see each other, as they would one at a time.
            recent = recent_by_user.setdefault(
                event.user_id, [RecentInteraction.decode(raw) for raw in replies[2 * index + 1]]
            )
            self._queue_update(update, event, recent)
            recent.insert(0, RecentInteraction(event.item_id, event.event_type, event.timestamp))
            del recent[window:]
        if any(applied):
            update.execute()
        return applied

    def _queue_update(self, pipe, event: Interaction, recent: list[RecentInteraction]) -> None:
        weight = event.weight
        scaled = weight * self.clock.scale(event.timestamp)
        kind = event.event_type.value
        user_f = Keys.user_features(event.user_id)
        item_f = Keys.item_features(event.item_id)

        pipe.hincrby(user_f, f"cnt:{kind}", 1)
        pipe.hincrbyfloat(user_f, "eng", scaled)
        pipe.hset(user_f, "last_ts", repr(event.timestamp))
        pipe.hincrbyfloat(Keys.user_items(event.user_id), event.item_id, weight)
        recent_key = Keys.user_recent(event.user_id)
        entry = RecentInteraction(event.item_id, event.event_type, event.timestamp)
        pipe.lpush(recent_key, entry.encode())
        pipe.ltrim(recent_key, 0, self.settings.recent_items_cap - 1)

        pipe.hincrby(item_f, f"cnt:{kind}", 1)
        pipe.hincrbyfloat(item_f, "pop", scaled)
        if event.event_type in CONVERSION_EVENTS:
            pipe.hincrby(item_f, "pos", 1)
        pipe.hset(item_f, "last_ts", repr(event.timestamp))
        pipe.hsetnx(item_f, "first_ts", repr(event.timestamp))
        pipe.zincrby(Keys.POPULARITY, scaled, event.item_id)
        self.trending.add(pipe, event.item_id, weight, event.timestamp)
        pipe.sadd(Keys.CATALOG, event.item_id)
        pipe.hincrby(Keys.COUNTERS, f"events:{kind}", 1)

        if weight <= 0:
            return  # dislikes act at request time through the disliked item's neighbours
        scale = self.clock.scale(event.timestamp)
        cap = self.settings.cooccurrence_cap
        partners: dict[str, float] = {}
        for other in recent:
            if other.item_id != event.item_id and other.weight > 0 and other.item_id not in partners:
                partners[other.item_id] = other.weight
        this_co = Keys.item_cooccurrence(event.item_id)
        for other_id, other_weight in partners.items():
            strength = weight * other_weight * scale
            other_co = Keys.item_cooccurrence(other_id)
            pipe.zincrby(this_co, strength, other_id)
            pipe.zincrby(other_co, strength, event.item_id)
            pipe.zremrangebyrank(other_co, 0, -cap - 1)
        if partners:
            pipe.zremrangebyrank(this_co, 0, -cap - 1)

    def upsert_items(self, items: Iterable[ItemMetadata], now: float | None = None) -> int:
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for item in items:
            key = Keys.item_features(item.item_id)
            pipe.hset(key, "cat", "|".join(item.categories))
            if item.title is not None:
                pipe.hset(key, "title", item.title)
            pipe.sadd(Keys.CATALOG, item.item_id)
            # A new item joins the popularity and trending rankings at zero, so it can be served as backfill.
            pipe.zadd(Keys.POPULARITY, {item.item_id: 0.0}, nx=True)
            self.trending.add(pipe, item.item_id, 0.0, now)
            count += 1
        if count:
            pipe.execute()
        return count

    # -- reads ----------------------------------------------------------------------------------

    def user_profile(self, user_id: str) -> UserProfile:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(Keys.user_items(user_id))
        pipe.lrange(Keys.user_recent(user_id), 0, self.settings.cooccurrence_window - 1)
        pipe.hgetall(Keys.user_features(user_id))
        history, recent, feats = pipe.execute()
        profile = UserProfile(
            user_id=user_id,
            history={item: float(w) for item, w in history.items()},
            recent=[RecentInteraction.decode(raw) for raw in recent],
            event_counts={k[4:]: int(v) for k, v in feats.items() if k.startswith("cnt:")},
        )
        if "last_ts" in feats:
            profile.last_event_time = float(feats["last_ts"])
            profile.engagement = self.clock.decayed(float(feats.get("eng", 0.0)), profile.last_event_time)
        return profile

    def top_popular(self, limit: int) -> list[tuple[str, float]]:
        return self.redis.zrevrange(Keys.POPULARITY, 0, limit - 1, withscores=True)

    def neighbours(self, item_ids: Sequence[str], limit: int) -> list[list[tuple[str, float]]]:
        pipe = self.redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.zrevrange(Keys.item_cooccurrence(item_id), 0, limit - 1, withscores=True)
        return pipe.execute() if item_ids else []

    def popularity_of(self, item_ids: Sequence[str]) -> list[float]:
        if not item_ids:
            return []
        return [score or 0.0 for score in self.redis.zmscore(Keys.POPULARITY, list(item_ids))]

    def categories_of(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        pipe = self.redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hget(Keys.item_features(item_id), "cat")
        return {item: set(raw.split("|")) if raw else set() for item, raw in zip(item_ids, pipe.execute(), strict=True)}

    def item_features(self, item_id: str) -> dict[str, str]:
        return self.redis.hgetall(Keys.item_features(item_id))

    def items_features(self, item_ids: Sequence[str]) -> list[dict[str, str]]:
        """The feature hashes of many items, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hgetall(Keys.item_features(item_id))
        return pipe.execute() if item_ids else []
