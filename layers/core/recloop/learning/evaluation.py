"""Evaluation by replay: the one harness behind the replay benchmark (`bench.replay`) and training's holdout check.

Protocol:

1. Events are in time order (stable). The first part is the warm-up: every one is applied to the feature store
   (``FeatureStore.apply_many``, what the event Lambda runs after the stream write) and the list is given to the
   system's ``fit``. The benchmark warms up on the first WARMUP_FRACTION of its log; training warms up on the
   events before its holdout.
2. The rest is streamed in order. For each positive event (POSITIVE_EVENTS) the system is asked for the user's
   top k at the event's time. It must exclude every item the user had any event with before: the harness checks
   this and stops on a violation (ProtocolViolationError), since such a list would score hits the product can
   never serve. Hit if the event's item is in the list; NDCG@k = 1/log2(rank+1) on a hit, 0 on a miss. "Known
   users" are users with an earlier event of any type (warm-up included).
3. Then every event, positive or not, is ingested: feature store first, then the system's own ``ingest``.
   Ingests between two requests go to the store as one ``apply_many`` batch (as POST /events/batch does), which
   the feature store applies exactly as it would one event at a time.

A ratio over nothing (no positives, no known users, an empty catalogue) is None: not measured, rather than a
zero that would read as a measured failure.

Asked for curves, each result also carries HR@k and NDCG@k over a rolling window of consecutive positives, at a
few hundred points along the stream (``rolling_curve``): how the metric moves as the system learns, in a report
that stays small however long the stream.

Systems are objects implementing ``ReplaySystem``, built with a ``ReplayContext`` (settings, Redis client,
feature store). ``replay_system`` runs one against a real Redis; ``evaluate_offline`` runs a Recommender over
the in-process store, as training does.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recloop.adapters.redis import RedisClient, connect
from recloop.core.events import POSITIVE_EVENTS, Interaction, K
from recloop.core.progress import Progress, no_progress
from recloop.core.settings import Settings
from recloop.features.memory_redis import MemoryRedis
from recloop.features.store import FeatureStore
from recloop.learning.datasets import Dataset
from recloop.serving.context import ServedModel
from recloop.serving.recommender import Recommender

WARMUP_FRACTION = 0.5
INGEST_BATCH = 500
PROGRESS_EVERY = 10_000
# A rolling curve's points along the stream, and its default window: a tenth of the stream's positives (at least 10).
CURVE_POINTS = 200
CURVE_WINDOW_SHARE = 0.1
MIN_CURVE_WINDOW = 10
# RecLoop settings of a replay against Redis: defaults, except that the popularity cache (1 s of wall time by
# default) is off, because a replay packs hours of event time into each second.
REPLAY_SETTINGS_OVERRIDES = {"POPULARITY_CACHE_SECONDS": "0"}

Log = Callable[[str], None]


def ratio(numerator: float, denominator: int) -> float | None:
    """``numerator / denominator`` to 6 decimals; None when the denominator is 0 (nothing was measured)."""
    return round(numerator / denominator, 6) if denominator else None


def timing_summary(samples_ms: Sequence[float]) -> dict[str, float] | None:
    """Count, median, p99, mean and maximum of timings in milliseconds (None for none); the benchmarks use it too."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "max_ms": round(ordered[-1], 4),
    }


# -- the split and the data's limits ----------------------------------------------------------------------------


def split_point(events: Sequence[Interaction]) -> int:
    return int(len(events) * WARMUP_FRACTION)


def warmup_split(events: Sequence[Interaction]) -> tuple[list[Interaction], list[Interaction]]:
    """The warm-up (first WARMUP_FRACTION of the events) and the stream that follows it."""
    split = split_point(events)
    return list(events[:split]), list(events[split:])


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
        "hr_at_10_upper_bound": ratio(positives - on_seen - on_new, positives),
    }


def rolling_curve(ranks: Sequence[int | None], window: int, k: int = K, points: int = CURVE_POINTS) -> dict[str, Any]:
    """HR@k and NDCG@k over the last `window` positives, at up to `points` evenly spaced positives of the stream.

    `ranks` holds each positive's rank in its list, in stream order (None: a miss). Only full windows count, so
    the curve starts at positive `window`; ``positives`` is the number evaluated when each window ends. Empty
    when the stream has fewer positives than the window."""
    hits = [0, *itertools.accumulate(rank is not None for rank in ranks)]
    gains = [0.0, *itertools.accumulate(0.0 if rank is None else 1.0 / math.log2(rank + 1) for rank in ranks)]
    count = len(ranks)
    ends: list[int] = []
    if window >= 1 and count >= window:
        steps = max(1, min(points, count - window + 1) - 1)
        ends = sorted({window + round(n * (count - window) / steps) for n in range(steps + 1)})
    return {
        "window": window,
        "positives": ends,
        f"hr_at_{k}": [round((hits[end] - hits[end - window]) / window, 6) for end in ends],
        f"ndcg_at_{k}": [round((gains[end] - gains[end - window]) / window, 6) for end in ends],
    }


def default_curve_window(stream_positives: int) -> int:
    return max(MIN_CURVE_WINDOW, int(stream_positives * CURVE_WINDOW_SHARE))


# -- systems ----------------------------------------------------------------------------------------------------


@dataclass
class ReplayContext:
    """What a system may use: the run's settings, Redis and feature store (already warm when it is asked)."""

    settings: Settings
    redis: RedisClient
    store: FeatureStore

    def apply(self, events: Sequence[Interaction]) -> None:
        """The event Lambda's feature update, in batches."""
        for start in range(0, len(events), INGEST_BATCH):
            self.store.apply_many(events[start : start + INGEST_BATCH])


class ReplaySystem(Protocol):
    def fit(self, warmup: list[Interaction]) -> None:
        """Train on the warm-up (already in the feature store); called once, before the stream."""
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
    """Base of systems that serve from the feature store alone: nothing to train or ingest."""

    def __init__(self, context: ReplayContext) -> None:
        self.context = context

    def fit(self, warmup: list[Interaction]) -> None:
        pass

    def ingest(self, event: Interaction) -> None:
        pass

    def close(self) -> None:
        pass


class RecommenderSystem(FeatureStoreSystem):
    """The Recommender over the context's store, with a served model or the built-in scorers.

    ``log=False`` skips the attribution log, which an offline replay has no use for.
    """

    def __init__(
        self, context: ReplayContext, model: Callable[[], ServedModel | None] | None = None, log: bool = True
    ) -> None:
        super().__init__(context)
        self.recommender = Recommender(context.store, context.settings, model)
        self.log = log
        self.models: Counter[str] = Counter()

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        result = self.recommender.recommend(user_id, k, now=now, log=self.log)
        self.models[result.model_version] += 1
        return [item.item_id for item in result.items]

    def details(self) -> dict[str, Any]:
        return {"requests_by_model": dict(self.models)}


# -- the replay -------------------------------------------------------------------------------------------------


class ProtocolViolationError(RuntimeError):
    """A system recommended an item the user had already had an event with (or repeated one)."""


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


class ReplayRun:
    """One system's pass over the events: counters, each user's seen items, pending ingests."""

    def __init__(
        self,
        name: str,
        context: ReplayContext,
        system: ReplaySystem,
        k: int = K,
        trace: list[Judgement] | None = None,
        *,
        progress: Progress = no_progress,
    ) -> None:
        self.name, self.context, self.system, self.k, self.trace = name, context, system, k, trace
        self.progress = progress
        self.seen: dict[str, set[str]] = {}
        self.everyone, self.known_users = Score(), Score()
        self.ranks: list[int | None] = []  # each positive's, in stream order (the rolling curves)
        self.pending: list[Interaction] = []
        self.latencies_ms: list[float] = []
        self.catalogue: set[str] = set()
        self.recommended: set[str] = set()

    def remember(self, events: Sequence[Interaction]) -> None:
        """Record events as seen without applying them (for a store that already holds them)."""
        for event in events:
            self.seen.setdefault(event.user_id, set()).add(event.item_id)
            self.catalogue.add(event.item_id)

    def warm_up(self, warmup: Sequence[Interaction]) -> None:
        for start in range(0, len(warmup), INGEST_BATCH):
            self.context.apply(warmup[start : start + INGEST_BATCH])
            self.progress(f"{self.name}: warm-up", min(start + INGEST_BATCH, len(warmup)), len(warmup))
        self.remember(warmup)

    def flush(self) -> None:
        """Ingest what happened since the last request: feature store first, then the system."""
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
        self.ranks.append(rank)
        if user_seen is not None:
            self.known_users.add(rank)
        self.recommended.update(recommended)
        if self.trace is not None:
            known = user_seen is not None
            self.trace.append(Judgement(index, event.user_id, event.item_id, known, rank, tuple(recommended)))

    def step(self, index: int, event: Interaction) -> None:
        if event.event_type in POSITIVE_EVENTS:
            self.judge(index, event)
        self.pending.append(event)
        self.seen.setdefault(event.user_id, set()).add(event.item_id)
        self.catalogue.add(event.item_id)

    def stream(self, events: Sequence[Interaction], first_index: int = 0, log: Log | None = None) -> None:
        """Step through the events, then ingest what is left."""
        started = time.perf_counter()
        for n, event in enumerate(events, 1):
            self.step(first_index + n - 1, event)
            self.progress(f"{self.name}: stream", n, len(events))
            if log is not None and n % PROGRESS_EVERY == 0:
                so_far = ratio(self.everyone.hits, self.everyone.positives)
                elapsed = time.perf_counter() - started
                log(f"[{self.name}] {n}/{len(events)} stream events, HR@{self.k} {so_far}, {elapsed:.0f}s")
        self.flush()

    def metrics(self) -> dict[str, Any]:
        """HR@k and NDCG@k, overall and for known users, and catalogue coverage (items recommended at least
        once / items with any event)."""
        everyone, known, k = self.everyone, self.known_users, self.k
        return {
            f"hr_at_{k}": ratio(everyone.hits, everyone.positives),
            f"ndcg_at_{k}": ratio(everyone.ndcg, everyone.positives),
            f"hr_at_{k}_known_users": ratio(known.hits, known.positives),
            f"ndcg_at_{k}_known_users": ratio(known.ndcg, known.positives),
            "coverage": ratio(len(self.recommended), len(self.catalogue)),
            "positives_evaluated": everyone.positives,
            "positives_known_users": known.positives,
        }

    def result(self, seconds: Mapping[str, float], curve_window: int | None = None) -> dict[str, Any]:
        details = self.system.details() if hasattr(self.system, "details") else None
        return {
            **self.metrics(),
            "hits": self.everyone.hits,
            "hits_known_users": self.known_users.hits,
            **{f"{part}_seconds": round(value, 2) for part, value in seconds.items()},
            "recommend_latency": timing_summary(self.latencies_ms),
            **({"details": details} if details is not None else {}),
            **({"curve": rolling_curve(self.ranks, curve_window, self.k)} if curve_window is not None else {}),
        }


def replay_system(
    name: str,
    factory: SystemFactory,
    events: Sequence[Interaction],
    redis_url: str,
    *,
    k: int = K,
    trace: list[Judgement] | None = None,
    log: Log | None = None,
    progress: Progress = no_progress,
    curve_window: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run one system over the events against the Redis at ``redis_url`` (flushed before and after); with a
    `curve_window`, the result has its rolling curve (``rolling_curve``). `overrides`: settings (by their
    environment names) on top of the replay's."""
    settings = Settings.from_env({"REDIS_URL": redis_url, **REPLAY_SETTINGS_OVERRIDES, **(overrides or {})})
    client = connect(settings)
    client.flushdb(asynchronous=True)
    context = ReplayContext(settings, client, FeatureStore(client, settings, historical=True))
    warmup, stream = warmup_split(events)
    started = time.perf_counter()
    system = factory(context)
    try:
        run = ReplayRun(name, context, system, k, trace, progress=progress)
        run.warm_up(warmup)
        warmed = time.perf_counter()
        progress(f"{name}: fit")
        system.fit(warmup)
        fitted = time.perf_counter()
        if log is not None:
            ingest, fit = warmed - started, fitted - warmed
            log(f"[{name}] warm-up: {len(warmup)} events ingested in {ingest:.1f}s, fit {fit:.1f}s")
        run.stream(stream, len(warmup), log)
        finished = time.perf_counter()
        seconds = {"wall": finished - started, "warmup_ingest": warmed - started, "fit": fitted - warmed}
        result = run.result({**seconds, "stream": finished - fitted}, curve_window)
    finally:
        system.close()
        # In the background: freeing a replay's keys at once can outlast the client's socket timeout.
        client.flushdb(asynchronous=True)
        client.close()
    if log is not None:
        hr, ndcg = result[f"hr_at_{k}"], result[f"ndcg_at_{k}"]
        log(f"[{name}] done: HR@{k} {hr}, NDCG@{k} {ndcg}, {result['wall_seconds']}s")
    return result


def replay_report(
    dataset: Dataset,
    systems: Mapping[str, SystemFactory],
    redis_url: str,
    *,
    k: int = K,
    log: Log | None = None,
    progress: Progress = no_progress,
    curves: bool = False,
    curve_window: int | None = None,
) -> dict[str, Any]:
    """The dataset's summary, the protocol's parameters and each system's result, in the order given.

    With `curves`, each result has its rolling curve over `curve_window` positives (default: a tenth of the
    stream's positives, ``default_curve_window``), and the protocol names the window."""
    summary = dataset_summary(dataset)
    report: dict[str, Any] = {
        "dataset": summary,
        "protocol": {
            "k": k,
            "warmup_fraction": WARMUP_FRACTION,
            "positive_events": sorted(e.value for e in POSITIVE_EVENTS),
            "recloop_settings_overrides": REPLAY_SETTINGS_OVERRIDES,
        },
        "configs": {},
    }
    window = None
    if curves:
        window = curve_window or default_curve_window(summary["stream_positives"])
        report["protocol"]["curve_window_positives"] = window
    for name, factory in systems.items():
        report["configs"][name] = replay_system(
            name, factory, dataset.events, redis_url, k=k, log=log, progress=progress, curve_window=window
        )
    return report


# -- offline, in process ----------------------------------------------------------------------------------------


def offline_store(settings: Settings, history: Sequence[Interaction] = ()) -> FeatureStore:
    """A feature store in process memory holding `history`, as Redis would after those events."""
    store = FeatureStore(MemoryRedis(), settings, historical=True)
    ReplayContext(settings, store.redis, store).apply(history)
    return store


def evaluate_offline(
    settings: Settings,
    history: Sequence[Interaction],
    holdout: Sequence[Interaction],
    model: Callable[[FeatureStore], ServedModel | None] | None = None,
    k: int = K,
    *,
    progress: Progress = no_progress,
) -> dict[str, float | None]:
    """HR@k, NDCG@k and coverage of a model (None: the built-in scorers) on a holdout after `history`.

    The replay protocol with `history` as the warm-up, on the in-process store; known users are users of
    `history` (and of earlier holdout events). None marks a metric with nothing to measure, e.g. a holdout
    without positives.
    """
    store = offline_store(settings, history)
    served = model(store) if model is not None else None  # built on the warm store, as a loaded champion is
    context = ReplayContext(settings, store.redis, store)
    system = RecommenderSystem(context, (lambda: served) if served is not None else None, log=False)
    run = ReplayRun("holdout evaluation", context, system, k, progress=progress)
    run.remember(history)
    run.stream(holdout)
    return run.metrics()
