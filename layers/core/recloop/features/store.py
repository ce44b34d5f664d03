"""Real-time feature store on Redis.

Applying events costs two round trips, and an event is counted once however often it is applied:

1. a pipeline claims each event id with a short "pending" claim (SET NX with PENDING_CLAIM_SECONDS) and reads the
   user's recent items and the decay epoch;
2. one script (`WriteBatch`: a single command, atomic like MULTI/EXEC) updates user, item, global popularity and
   co-occurrence, and turns each claim into a "done" claim kept for the de-duplication window.

So a failure anywhere (Redis killed, a Lambda timed out) leaves each event either applied in full with a done
claim, or not applied with a pending claim that expires within seconds; the stream consumer then applies it. A
pending claim is never taken over while its holder may still apply: an applier abandons its transaction if it
could not send it within APPLY_DEADLINE_SECONDS of claiming, well inside the claim's lifetime.

On a Redis Cluster a script cannot span slots, so the update is one script per slot there (the user's keys, the
item's, each global key): a node failing in the middle of them can leave part of an event applied
(docs/reliability.md).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from itertools import batched
from typing import Any, NamedTuple

from recloop.adapters.redis import DELETE_IF_EQUAL, BatchWriter, Keys, RedisClient
from recloop.core.errors import UnavailableError
from recloop.core.events import CONVERSION_EVENTS, EVENT_WEIGHTS, EventType, Interaction
from recloop.core.settings import Settings
from recloop.features.decay import DecayClock
from recloop.features.memory_redis import MemoryRedis
from recloop.features.trending import TrendingRanking

# How long a claim of an event being applied lives: far longer than an apply (two round trips), short enough that
# the stream consumer takes over soon after an applier died.
PENDING_CLAIM_SECONDS = 10
# An applier sends its transaction within this of claiming, or abandons it (so it can never apply late, after
# its claim expired and someone else applied the same event).
APPLY_DEADLINE_SECONDS = 4.0
# How long a rescale may hold feature updates before they resume without it.
RESCALE_PAUSE_LEASE_SECONDS = 600
# The value of a claim whose event is applied.
DONE = "done"
# Events applied per minute and type (Keys.metrics_events) are kept this long; the operations routes read the last hour.
EVENT_MINUTES_TTL_SECONDS = 2 * 3600


class ApplyOutcome(StrEnum):
    APPLIED = "applied"  # this call applied the event
    DUPLICATE = "duplicate"  # applied before (a client retry or a stream redelivery)
    IN_FLIGHT = "in_flight"  # another applier holds its pending claim; it may or may not complete


class FeatureUpdateAbandonedError(UnavailableError):
    """The update was not sent in time (or features are paused for a decay rescale); the claims expire and the
    stream consumer applies the events."""

    code = "features_unavailable"


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


# The fields of an item's feature hash (Keys.item_features) its record is read from, in ItemRecord.parse's order.
ITEM_RECORD_FIELDS = (*(f"cnt:{kind.value}" for kind in EventType), "pos", "first_ts", "last_ts", "cat")


class ItemRecord(NamedTuple):
    """An item's counters as the feature store holds them (the ranker's item features are computed from them)."""

    events: int
    positives: int  # conversion events
    first_ts: float  # NaN before the item's first event
    last_ts: float
    categories: frozenset[str]

    @classmethod
    def parse(cls, values: Sequence[str | None]) -> ItemRecord:
        *counts, positives, first_ts, last_ts, categories = values
        return cls(
            events=sum(int(count) for count in counts if count),
            positives=int(positives) if positives else 0,
            first_ts=float(first_ts) if first_ts else math.nan,
            last_ts=float(last_ts) if last_ts else math.nan,
            categories=frozenset(categories.split("|")) if categories else frozenset(),
        )


@dataclass(frozen=True)
class ItemMetadata:
    item_id: str
    categories: tuple[str, ...] = ()
    title: str | None = None


class FeatureStore:
    def __init__(self, redis_client: RedisClient, settings: Settings, *, historical: bool = False) -> None:
        """`historical`: the events are a log replayed in time order (offline evaluation and training), so the
        decay epoch is the first event's time; live, it is the server's time when first needed."""
        self.redis = redis_client
        self.settings = settings
        self.clock = DecayClock(redis_client, settings.half_life_seconds, historical=historical)
        self.trending = TrendingRanking(redis_client, settings.trending_half_life_seconds)
        # One script makes each batch's update all-or-nothing (per slot on a cluster, which the writer asks of the
        # client, not of REDIS_CLUSTER); an offline replay's in-process store runs the same writes in order.
        self._writer = redis_client if isinstance(redis_client, MemoryRedis) else BatchWriter(redis_client)
        self._dedup_seconds = settings.deduplication_seconds

    # -- writes ---------------------------------------------------------------------------------

    def apply(self, event: Interaction) -> bool:
        """Update every feature the event touches. Returns False if the event id was seen before."""
        return self.apply_many([event])[0] is ApplyOutcome.APPLIED

    def apply_many(self, events: Sequence[Interaction]) -> list[ApplyOutcome]:
        """Apply events in order, each at most once; one outcome per event.

        Raises a Redis error or FeatureUpdateAbandonedError when nothing of the batch was applied (the claims it
        took expire within PENDING_CLAIM_SECONDS)."""
        if not events:
            return []
        claimed_at = time.monotonic()
        token = secrets.token_hex(8)
        window = self.settings.cooccurrence_window
        claim = self.redis.pipeline(transaction=False)
        claim.hmget(Keys.DECAY, DecayClock.FIELDS)
        for event in events:
            seen = Keys.user_event_seen(event.user_id, event.event_id)
            claim.set(seen, token, nx=True, ex=PENDING_CLAIM_SECONDS)
            claim.get(seen)
            claim.lrange(Keys.user_recent(event.user_id), 0, window - 1)
        replies = claim.execute()
        self.clock.observe(replies[0])

        outcomes: list[ApplyOutcome] = []
        claimed: set[str] = set()
        for index, event in enumerate(events):
            taken, holder = replies[1 + 3 * index], replies[2 + 3 * index]
            if taken:
                claimed.add(event.event_id)
                outcomes.append(ApplyOutcome.APPLIED)
            elif holder == DONE or (holder == token and event.event_id in claimed) or holder == "1":
                outcomes.append(ApplyOutcome.DUPLICATE)  # "1": the done mark of earlier releases
            else:
                outcomes.append(ApplyOutcome.IN_FLIGHT)
        if not claimed:
            return outcomes
        if self.clock.paused():
            self._release(events, outcomes, token)
            raise FeatureUpdateAbandonedError("feature updates are paused while the decay epoch is rescaled")

        try:
            update = self._queued_update(events, outcomes, replies)
            if time.monotonic() - claimed_at > APPLY_DEADLINE_SECONDS:
                raise FeatureUpdateAbandonedError("the update was not sent in time; the stream consumer applies it")
        except Exception:
            # Nothing was sent: give the claims up at once, so the consumer applies the events without waiting.
            self._release(events, outcomes, token)
            raise
        # Sent: it may have been applied even if no answer comes back, so its claims stay until done or expired.
        update.execute()
        return outcomes

    def _queued_update(self, events: Sequence[Interaction], outcomes: list[ApplyOutcome], replies: list) -> Any:
        """The one update that applies every claimed event of the batch and marks its claim done."""
        window = self.settings.cooccurrence_window
        recent_by_user: dict[str, list[RecentInteraction]] = {}
        update = self._writer.batch()
        for index, event in enumerate(events):
            if outcomes[index] is not ApplyOutcome.APPLIED:
                continue
            # Events of one user in one batch see each other, as they would one at a time.
            recent = recent_by_user.setdefault(
                event.user_id, [RecentInteraction.decode(raw) for raw in replies[3 + 3 * index]]
            )
            self._queue_update(update, event, recent)
            recent.insert(0, RecentInteraction(event.item_id, event.event_type, event.timestamp))
            del recent[window:]
            update.set(Keys.user_event_seen(event.user_id, event.event_id), DONE, ex=self._dedup_seconds)
        self._count_minute(update, [e for e, o in zip(events, outcomes, strict=True) if o is ApplyOutcome.APPLIED])
        return update

    @staticmethod
    def _count_minute(pipe: Any, applied: Sequence[Interaction]) -> None:
        """The event rates over time: this minute's count per type, one command per type in the batch."""
        key = Keys.metrics_events(int(time.time() // 60))
        for kind, count in Counter(event.event_type.value for event in applied).items():
            pipe.hincrby(key, kind, count)
        pipe.expire(key, EVENT_MINUTES_TTL_SECONDS)

    def apply_waiting(self, event: Interaction, timeout: float = PENDING_CLAIM_SECONDS + 1.0) -> ApplyOutcome:
        """Apply one event; while another applier holds its pending claim, wait for that claim to be done or to
        expire (then apply it here). The stream consumer's path: it must neither skip nor double an event."""
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            outcome = self.apply_many([event])[0]
            if outcome is not ApplyOutcome.IN_FLIGHT or time.monotonic() >= deadline:
                return outcome
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _release(self, events: Sequence[Interaction], outcomes: list[ApplyOutcome], token: str) -> None:
        """Give up the pending claims this call took, so the consumer need not wait for them to expire."""
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome is ApplyOutcome.APPLIED:
                self.redis.eval(DELETE_IF_EQUAL, 1, Keys.user_event_seen(event.user_id, event.event_id), token)

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

    # -- maintenance ----------------------------------------------------------------------------

    def rescale_decay(self, now: float | None = None, log: Callable[[str], None] = lambda _: None) -> dict[str, float]:
        """Move the decay epoch to `now`, rescaling every stored decayed value to it (decayed values unchanged).

        Feature updates pause meanwhile (appliers see the pause with their claims and leave their events to the
        stream consumer, which retries), since a value written with the old epoch into a rescaled key, or the
        reverse, would be off by the whole shift. Each key is rewritten in one command, so readers see it
        scaled either way, never half."""
        now = round(time.time() if now is None else now, 3)
        old_epoch = self.clock.epoch(now)
        factor = math.pow(2.0, -(now - old_epoch) / self.settings.half_life_seconds)
        # A lease, not a flag: should this process die mid-rescale, updates resume on their own.
        self.redis.hset(Keys.DECAY, "paused_until", repr(time.time() + RESCALE_PAUSE_LEASE_SECONDS))
        # Appliers that read the epoch before the pause send their transaction within APPLY_DEADLINE_SECONDS.
        time.sleep(APPLY_DEADLINE_SECONDS + self.settings.redis_timeout_seconds)
        counts = {"user_hashes": 0, "item_hashes": 0, "cooccurrence_sets": 0}
        for pattern, fieldname, counter in (
            (Keys.USER_FEATURES_PATTERN, "eng", "user_hashes"),
            (Keys.ITEM_FEATURES_PATTERN, "pop", "item_hashes"),
        ):
            for key in self.redis.scan_iter(match=pattern, count=1000):
                value = self.redis.hget(key, fieldname)
                if value is not None:
                    self.redis.hset(key, fieldname, repr(float(value) * factor))
                    counts[counter] += 1
            log(f"rescaled {counts[counter]} {counter.replace('_', ' ')}")
        for key in self.redis.scan_iter(match=Keys.COOCCURRENCE_PATTERN, count=1000):
            members = self.redis.zrange(key, 0, -1, withscores=True)
            if members:
                self.redis.zadd(key, {member: score * factor for member, score in members})
                counts["cooccurrence_sets"] += 1
        log(f"rescaled {counts['cooccurrence_sets']} co-occurrence sets")
        self.redis.delete(Keys.POPULARITY_RESCALED)
        popular = 0
        for chunk in batched(self.redis.zscan_iter(Keys.POPULARITY, count=1000), 1000):
            self.redis.zadd(Keys.POPULARITY_RESCALED, {member: score * factor for member, score in chunk})
            popular += len(chunk)
        if popular:
            self.redis.rename(Keys.POPULARITY_RESCALED, Keys.POPULARITY)
        log(f"rescaled {popular} popularity scores")
        self.redis.hset(Keys.DECAY, "epoch", repr(now))
        self.redis.hdel(Keys.DECAY, "paused_until")
        self.clock.observe((repr(now), None))
        return {"old_epoch": old_epoch, "new_epoch": now, "factor": factor, "popularity": popular, **counts}

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

    def item_records(self, item_ids: Sequence[str]) -> list[ItemRecord]:
        """The records of many items, in one pipeline (only the fields a record holds are read)."""
        return self.popularity_and_records((), item_ids)[1]

    def popularity_and_records(
        self, popularity_of: Sequence[str], records_of: Sequence[str]
    ) -> tuple[list[float], list[ItemRecord]]:
        """The popularity of some items and the records of others, in one pipeline."""
        if not popularity_of and not records_of:
            return [], []
        pipe = self.redis.pipeline(transaction=False)
        if popularity_of:
            pipe.zmscore(Keys.POPULARITY, list(popularity_of))
        for item_id in records_of:
            pipe.hmget(Keys.item_features(item_id), ITEM_RECORD_FIELDS)
        replies = pipe.execute()
        popularity = [score or 0.0 for score in replies.pop(0)] if popularity_of else []
        return popularity, [ItemRecord.parse(values) for values in replies]
