"""`python -m bench.replay`: recommendation quality of the whole loop on a time-ordered event log.

Protocol (DESIGN.md section 11, "Replay"):

1. Events are sorted by timestamp (stable), optionally cut to the first ``--limit`` events.
2. The first 50% of events are the warm-up: every one is ingested into the feature store
   (``FeatureStore.apply_many``, what the event Lambda runs after the stream write) and the list is
   given to the configuration's ``fit`` (trained models train on it, once).
3. The rest is streamed in order. For each positive event (like, purchase) the configuration is asked
   for the user's top 10 at the event's time, excluding every item the user had any event with
   before (the harness checks this and stops on a violation). Hit if the event's item is in the
   list; NDCG@10 = 1/log2(rank+1) on a hit, 0 on a miss. "Known users" are users with an earlier
   event of any type (warm-up included). Then every event, positive or not, is ingested: feature
   store first, then the configuration's own ``ingest``.

Everything that is RecLoop runs for real: a real Redis server (FLUSHDB between configurations), the
feature store's write path, and ``recloop.recommender`` for requests, with ``now`` set to the event's
time so decay follows the data's clock. The Kinesis write of POST /event is not part of the replay.
Ingests between two requests are sent as one ``apply_many`` batch (as POST /events/batch does),
which the feature store applies exactly as it would one event at a time.

Hyperparameters are never chosen on the stream half: RecLoop runs with its default settings (only
the popularity cache is off, so every request sees every earlier event), and peer models use fixed
values documented in ``bench.peers``, chosen without the stream half of any run.

Configurations are classes implementing ``ReplaySystem``, named in ``CONFIGS``. Adding one, e.g. a
static trained model: write ``class StaticMF`` in your own module, then either add
``CONFIGS["static_mf"] = "bench.static_mf:StaticMF"`` here (imported only when selected), or call
``register("static_mf", StaticMF)`` in that module and pass ``--plugin bench.static_mf``. The class is
built with a ``ReplayContext`` (settings, Redis client, feature store).

Usage:
    python -m bench.replay --movietweetings [DIR] [--limit N] [--config NAME ...] [--json]
    python -m bench.replay --events FILE.csv [--limit N] [--config NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.common import log, redis_server, summary
from recloop.adapters.redis import RedisClient, connect
from recloop.core.events import POSITIVE_EVENTS, EventType, Interaction
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.handlers.http.schemas import InteractionIn
from recloop.learning.datasets import MOVIETWEETINGS_EVENTS
from recloop.serving.context import UserContext
from recloop.serving.recommender import Recommender
from recloop.serving.scorers import PopularityScorer, TrendingScorer
from recloop.serving.sources import PopularityCache, PopularitySource

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MOVIETWEETINGS = ROOT.parent / "shared" / "data" / "movietweetings-100k"

K = 10
WARMUP_FRACTION = 0.5
INGEST_BATCH = 500
PROGRESS_EVERY = 10_000
DEFAULT_CONFIGS = ("popularity", "realtime", "implicit_als")

# RecLoop settings of the replay: defaults, except that the popularity cache (1 s of wall time by
# default) is off, because a replay packs hours of event time into each second.
SETTINGS_OVERRIDES = {"POPULARITY_CACHE_SECONDS": "0"}


def rating_event(rating: int) -> EventType:
    """MovieTweetings rating (0-10) -> event type (shared/data/README.md), as the training CLI maps it."""
    return EventType(MOVIETWEETINGS_EVENTS[rating])


# -- data -----------------------------------------------------------------------------------------


@dataclass
class Dataset:
    events: list[Interaction]
    source: str
    notes: dict[str, Any] = field(default_factory=dict)


def _interactions(rows: Iterable[tuple[str, str, str, float]], limit: int | None) -> list[Interaction]:
    """Stable sort by time, cut, then validate each row as POST /event would (event ids are positions)."""
    ordered = sorted(rows, key=lambda row: row[3])
    if limit is not None:
        ordered = ordered[:limit]
    return [
        InteractionIn(user_id=user, item_id=item, event_type=kind, timestamp=ts, event_id=f"replay-{n}").to_event(ts)
        for n, (user, item, kind, ts) in enumerate(ordered)
    ]


def load_events_csv(path: Path, limit: int | None = None) -> Dataset:
    """CSV with header ``user_id,item_id,event_type,timestamp`` (unix seconds)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"user_id", "item_id", "event_type", "timestamp"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = [(r["user_id"], r["item_id"], r["event_type"], float(r["timestamp"])) for r in reader]
    return Dataset(_interactions(rows, limit), source=str(path))


def verify_sha256sums(folder: Path) -> list[str]:
    """Check every file listed in ``folder/SHA256SUMS``; returns the names checked, raises on a mismatch."""
    checked = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != expected:
            raise ValueError(f"{folder / name}: sha256 {actual} does not match SHA256SUMS ({expected})")
        checked.append(name)
    return checked


def load_movietweetings(folder: Path, limit: int | None = None) -> Dataset:
    """``ratings.dat`` lines ``user::movie::rating::timestamp``, ratings mapped by ``rating_event``."""
    checked = verify_sha256sums(folder) if (folder / "SHA256SUMS").exists() else []
    rows = []
    with (folder / "ratings.dat").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                user, movie, rating, ts = line.strip().split("::")
                rows.append((user, movie, rating_event(int(rating)).value, float(ts)))
    return Dataset(_interactions(rows, limit), source=str(folder), notes={"sha256_verified": checked})


def split_point(events: Sequence[Interaction]) -> int:
    return int(len(events) * WARMUP_FRACTION)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """Counts, including how many stream positives no system can hit (item seen before, or new to all)."""
    events = dataset.events
    split = split_point(events)
    seen: dict[str, set[str]] = {}
    items_so_far: set[str] = set()
    positives = known = on_seen = on_new = 0
    for n, event in enumerate(events):
        user_items = seen.get(event.user_id)
        if n >= split and event.event_type in POSITIVE_EVENTS:
            positives += 1
            known += user_items is not None
            on_seen += user_items is not None and event.item_id in user_items
            on_new += event.item_id not in items_so_far
        seen.setdefault(event.user_id, set()).add(event.item_id)
        items_so_far.add(event.item_id)
    return {
        "source": dataset.source,
        **dataset.notes,
        "events": len(events),
        "users": len(seen),
        "items": len(items_so_far),
        "event_types": dict(Counter(e.event_type.value for e in events).most_common()),
        "warmup_events": split,
        "stream_events": len(events) - split,
        "first_timestamp": events[0].timestamp if events else None,
        "split_timestamp": events[split].timestamp if split < len(events) else None,
        "last_timestamp": events[-1].timestamp if events else None,
        "stream_positives": positives,
        "stream_positives_known_users": known,
        "stream_positives_on_items_the_user_had_seen": on_seen,
        "stream_positives_on_items_never_seen_before": on_new,
        "hr_at_10_upper_bound": _ratio(positives - on_seen - on_new, positives),
    }


# -- configurations -------------------------------------------------------------------------------


@dataclass
class ReplayContext:
    """What a configuration may use: the run's settings, Redis and feature store (already warm)."""

    settings: Settings
    redis: RedisClient
    store: FeatureStore

    def apply(self, events: Sequence[Interaction]) -> None:
        """The event Lambda's feature update, in batches."""
        for start in range(0, len(events), INGEST_BATCH):
            self.store.apply_many(events[start : start + INGEST_BATCH])


class ReplaySystem(Protocol):
    def fit(self, warmup: list[Interaction]) -> None:
        """Train on the warm-up half (already in the feature store); called once, before the stream."""
        ...

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        """Top-k item ids for the user at time ``now``, none the user had an event with."""
        ...

    def ingest(self, event: Interaction) -> None:
        """Learn from one stream event, after the feature store has applied it."""
        ...

    def close(self) -> None: ...


SystemFactory = Callable[[ReplayContext], ReplaySystem]


class FeatureStoreSystem:
    """Base of configurations that serve from the feature store alone: nothing to train or ingest."""

    def __init__(self, context: ReplayContext) -> None:
        self.context = context

    def fit(self, warmup: list[Interaction]) -> None:
        pass

    def ingest(self, event: Interaction) -> None:
        pass

    def close(self) -> None:
        pass


class PopularityOnly(FeatureStoreSystem):
    """Real-time decayed global popularity (POPULARITY_HALF_LIFE_HOURS) for every user, the user's history
    excluded: the Recommender's own popularity source and scorer."""

    trending = False

    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context)
        store, seconds = context.store, context.settings.popularity_cache_seconds
        if self.trending:
            self.source = PopularitySource(PopularityCache(store.trending.top, seconds), trending=True)
            self.scorer: Any = TrendingScorer()
        else:
            self.source = PopularitySource(PopularityCache(lambda limit, _: store.top_popular(limit), seconds))
            self.scorer = PopularityScorer(store)

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        profile = self.context.store.user_profile(user_id)
        ctx = UserContext(profile=profile, now=now, exclude=set(profile.history))
        eligible = [item for item in self.source.candidates(ctx, k) if item not in ctx.exclude]
        scores = self.scorer.score(ctx, eligible)
        ranked = sorted(zip(eligible, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))
        return [item for item, _ in ranked[:k]]


class TrendingOnly(PopularityOnly):
    """Trending (popularity over TRENDING_HALF_LIFE_HOURS) for every user: what the Recommender serves a cold
    user, ranked exactly as it does."""

    trending = True


class RealtimeRecommender(FeatureStoreSystem):
    """The default Recommender: co-occurrence for known users, popularity for cold users."""

    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context)
        self.recommender = Recommender(context.store, context.settings)
        self.models: Counter[str] = Counter()

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        result = self.recommender.recommend(user_id, k, now=now)
        self.models[result.model_version] += 1
        return [item.item_id for item in result.items]

    def details(self) -> dict[str, Any]:
        return {"requests_by_model": dict(self.models)}


# name -> factory, or "module:attribute" imported when the configuration is selected.
CONFIGS: dict[str, SystemFactory | str] = {
    "popularity": PopularityOnly,
    "trending": TrendingOnly,
    "realtime": RealtimeRecommender,
    "implicit_als": "bench.peers:ImplicitALS",
    "implicit_als_retrain": "bench.peers:ImplicitALSRetrain",
    "static_mf": "bench.trained:StaticMF",
    "static_lgbm": "bench.trained:StaticLGBM",
    "online": "bench.online:OnlineLearning",
    "online_features_only": "bench.online:OnlineFeaturesOnly",
}


def register(name: str, factory: SystemFactory | str) -> None:
    CONFIGS[name] = factory


def resolve(name: str) -> SystemFactory:
    if name not in CONFIGS:
        raise KeyError(f"unknown configuration {name!r}; known: {', '.join(sorted(CONFIGS))}")
    factory = CONFIGS[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory


# -- the replay -----------------------------------------------------------------------------------


class ProtocolViolationError(RuntimeError):
    """A configuration recommended an item the user had already had an event with (or repeated one)."""


@dataclass
class Score:
    positives: int = 0
    hits: int = 0
    ndcg: float = 0.0

    def add(self, rank: int | None) -> None:
        self.positives += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 1)


@dataclass(frozen=True)
class Judgement:
    """One evaluated positive (for tests and debugging)."""

    index: int
    user_id: str
    item_id: str
    known_user: bool
    rank: int | None
    recommended: tuple[str, ...]


def _ratio(numerator: float, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


class _Run:
    """One configuration's pass over the events: counters, the user's seen items, pending ingests."""

    def __init__(
        self, name: str, context: ReplayContext, system: ReplaySystem, k: int, trace: list[Judgement] | None
    ) -> None:
        self.name, self.context, self.system, self.k, self.trace = name, context, system, k, trace
        self.seen: dict[str, set[str]] = {}
        self.everyone, self.known_users = Score(), Score()
        self.pending: list[Interaction] = []
        self.latencies_ms: list[float] = []

    def warm_up(self, warmup: list[Interaction]) -> None:
        self.context.apply(warmup)
        for event in warmup:
            self.seen.setdefault(event.user_id, set()).add(event.item_id)

    def flush(self) -> None:
        """Ingest what happened since the last request: feature store first, then the configuration."""
        self.context.apply(self.pending)
        for event in self.pending:
            self.system.ingest(event)
        self.pending.clear()

    def judge(self, index: int, event: Interaction) -> None:
        """Ask for the user's top k at the event's time and score the event's item against it."""
        self.flush()
        user_seen = self.seen.get(event.user_id)
        asked = time.perf_counter()
        recommended = list(self.system.recommend(event.user_id, self.k, event.timestamp))[: self.k]
        self.latencies_ms.append((time.perf_counter() - asked) * 1000)
        repeated = set(recommended) & user_seen if user_seen else set()
        if repeated or len(set(recommended)) != len(recommended):
            raise ProtocolViolationError(
                f"{self.name} recommended {sorted(repeated) or recommended} to {event.user_id}, "
                "who had already seen them (or a list with duplicates)"
            )
        rank = recommended.index(event.item_id) + 1 if event.item_id in recommended else None
        self.everyone.add(rank)
        if user_seen is not None:
            self.known_users.add(rank)
        if self.trace is not None:
            known = user_seen is not None
            self.trace.append(Judgement(index, event.user_id, event.item_id, known, rank, tuple(recommended)))

    def step(self, index: int, event: Interaction) -> None:
        if event.event_type in POSITIVE_EVENTS:
            self.judge(index, event)
        self.pending.append(event)
        self.seen.setdefault(event.user_id, set()).add(event.item_id)

    def result(self, seconds: dict[str, float]) -> dict[str, Any]:
        everyone, known = self.everyone, self.known_users
        details = self.system.details() if hasattr(self.system, "details") else None
        return {
            "hr_at_10": _ratio(everyone.hits, everyone.positives),
            "ndcg_at_10": _ratio(everyone.ndcg, everyone.positives),
            "hr_at_10_known_users": _ratio(known.hits, known.positives),
            "ndcg_at_10_known_users": _ratio(known.ndcg, known.positives),
            "positives_evaluated": everyone.positives,
            "positives_known_users": known.positives,
            "hits": everyone.hits,
            "hits_known_users": known.hits,
            **{f"{part}_seconds": round(value, 2) for part, value in seconds.items()},
            "recommend_latency": summary(self.latencies_ms) if self.latencies_ms else None,
            **({"k": self.k} if self.k != K else {}),
            **({"details": details} if details is not None else {}),
        }


def replay_config(
    name: str,
    events: Sequence[Interaction],
    redis_url: str,
    k: int = K,
    trace: list[Judgement] | None = None,
) -> dict[str, Any]:
    """Run one configuration over the events against the Redis at ``redis_url`` (flushed first)."""
    factory = resolve(name)
    settings = Settings.from_env({"REDIS_URL": redis_url, **SETTINGS_OVERRIDES})
    client = connect(settings)
    client.flushdb()
    context = ReplayContext(settings, client, FeatureStore(client, settings))
    split = split_point(events)
    warmup, stream = list(events[:split]), events[split:]

    started = time.perf_counter()
    system = factory(context)
    run = _Run(name, context, system, k, trace)
    run.warm_up(warmup)
    warmed = time.perf_counter()
    system.fit(warmup)
    fitted = time.perf_counter()
    log(f"[{name}] warm-up: {len(warmup)} events ingested in {warmed - started:.1f}s, fit {fitted - warmed:.1f}s")
    for n, event in enumerate(stream, 1):
        run.step(split + n - 1, event)
        if n % PROGRESS_EVERY == 0:
            so_far = _ratio(run.everyone.hits, run.everyone.positives)
            log(f"[{name}] {n}/{len(stream)} stream events, HR@{k} {so_far}, {time.perf_counter() - fitted:.0f}s")
    run.flush()
    finished = time.perf_counter()
    seconds = {"wall": finished - started, "warmup_ingest": warmed - started, "fit": fitted - warmed}
    result = run.result({**seconds, "stream": finished - fitted})
    system.close()
    client.flushdb()
    client.close()
    log(f"[{name}] done: HR@{k} {result['hr_at_10']}, NDCG@{k} {result['ndcg_at_10']}, {result['wall_seconds']}s")
    return result


def run(dataset: Dataset, configs: Sequence[str], redis_url: str, k: int = K) -> dict[str, Any]:
    for name in configs:
        resolve(name)  # fail before any work on an unknown name
    report: dict[str, Any] = {
        "dataset": dataset_summary(dataset),
        "protocol": {
            "k": k,
            "warmup_fraction": WARMUP_FRACTION,
            "positive_events": sorted(e.value for e in POSITIVE_EVENTS),
            "recloop_settings_overrides": SETTINGS_OVERRIDES,
        },
        "configs": {},
    }
    for name in configs:
        report["configs"][name] = replay_config(name, dataset.events, redis_url, k)
    return report


def table(report: dict[str, Any]) -> str:
    d = report["dataset"]
    lines = [
        f"{d['source']}: {d['events']} events, {d['users']} users, {d['items']} items; "
        f"{d['stream_positives']} stream positives ({d['stream_positives_known_users']} of known users), "
        f"HR@10 upper bound {d['hr_at_10_upper_bound']}",
        f"{'config':<14} {'HR@10':>8} {'NDCG@10':>8} {'HR@10 kn':>9} {'NDCG kn':>8} {'positives':>9} {'known':>7} "
        f"{'wall s':>8}",
    ]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for name, r in report["configs"].items():
        lines.append(
            f"{name:<14} {cell(r['hr_at_10']):>8} {cell(r['ndcg_at_10']):>8} {cell(r['hr_at_10_known_users']):>9} "
            f"{cell(r['ndcg_at_10_known_users']):>8} {r['positives_evaluated']:>9} {r['positives_known_users']:>7} "
            f"{r['wall_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="CSV: user_id,item_id,event_type,timestamp")
    source.add_argument(
        "--movietweetings",
        type=Path,
        nargs="?",
        const=DEFAULT_MOVIETWEETINGS,
        help=f"folder with ratings.dat (default {DEFAULT_MOVIETWEETINGS})",
    )
    parser.add_argument("--limit", type=int, help="use only the first N events after sorting")
    parser.add_argument("--config", action="append", help=f"repeatable; default {' '.join(DEFAULT_CONFIGS)}")
    parser.add_argument("--plugin", action="append", default=[], help="module to import that register()s configs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)

    # Under `python -m` this module is __main__: plugins importing bench.replay must register here.
    sys.modules.setdefault("bench.replay", sys.modules[__name__])
    for module in args.plugin:
        importlib.import_module(module)
    configs = args.config or list(DEFAULT_CONFIGS)
    for name in configs:
        try:
            resolve(name)
        except KeyError as exc:
            parser.error(exc.args[0])
    if args.limit is not None and args.limit < 2:
        parser.error("--limit must be at least 2")
    loaded = time.perf_counter()
    if args.events is not None:
        dataset = load_events_csv(args.events, args.limit)
    else:
        dataset = load_movietweetings(args.movietweetings, args.limit)
    log(f"loaded {len(dataset.events)} events from {dataset.source} in {time.perf_counter() - loaded:.1f}s")

    with redis_server() as url:
        report = run(dataset, configs, url)
    report["protocol"]["command"] = "python -m bench.replay " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
