"""Redis memory per user, per item and per event of the de-duplication window, measured on real data.

    python -m bench.redis_memory [--movietweetings ../shared/data/movietweetings-100k] [--limit 100000]

The MovieTweetings log is shifted so its last event is now (live decay scale, as a deployment a dataset's span old
holds) and run through the stream consumer's own path: features (FeatureStore.apply_many), the online-learning
buffer and both de-duplication claims. Every key is then weighed with MEMORY USAGE and charged to a user, an item,
an event or the global structures; the JSON on stdout gives the means and the extrapolation to a million users and
items. The reference in the same run is redis-server's own figure for the same keys (INFO used_memory delta).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import redis

from bench.common import log, redis_server
from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.features.store import FeatureStore
from recloop.learning.datasets import load_events
from recloop.learning.online.buffer import OnlineBuffer

BATCH = 500


def kind_of(key: str) -> str:
    """Which budget a key is charged to: its owner's (user, item, event) or the global structures'."""
    if key.startswith("{u:"):
        return "event" if ":ev:" in key else "user"
    if key.startswith("{i:"):
        return "item"
    if key.startswith("{olb}:ev:"):
        return "event"
    return "global"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movietweetings", type=Path, default=Path("../shared/data/movietweetings-100k"))
    parser.add_argument("--limit", type=int, default=100_000)
    args = parser.parse_args()

    events = load_events(args.movietweetings / "ratings.dat", limit=args.limit)
    shift = time.time() - max(e.timestamp for e in events)
    events = [
        Interaction(**{**e.model_dump(), "timestamp": e.timestamp + shift, "received_at": e.timestamp + shift})
        for e in sorted(events, key=lambda e: e.timestamp)
    ]
    with redis_server() as url:
        settings = Settings.from_env({"REDIS_URL": url})
        client = redis.Redis.from_url(url, decode_responses=True)
        client.flushdb()
        before = int(client.info("memory")["used_memory"])
        store, buffer = FeatureStore(client, settings), OnlineBuffer(client, settings)
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            store.apply_many(chunk)
            for event in chunk:
                buffer.append_once(event)
        used = int(client.info("memory")["used_memory"]) - before
        per_buffered = int(client.memory_usage(Keys.ONLINE_BUFFER, samples=0)) / client.llen(Keys.ONLINE_BUFFER)

        totals: dict[str, int] = defaultdict(int)
        keys: dict[str, int] = defaultdict(int)
        single_slot_event_bytes = 0  # the online buffer's claims ({olb}): one slot, whatever the cluster's size
        for key in client.scan_iter(count=2000):
            size = int(client.memory_usage(key, samples=0) or 0)
            totals[kind_of(key)] += size
            keys[kind_of(key)] += 1
            if key.startswith("{olb}:ev:"):
                single_slot_event_bytes += size
        client.flushdb()

    users = len({e.user_id for e in events})
    items = len({e.item_id for e in events})
    per_user = totals["user"] / users
    per_item = (totals["item"] + totals["global"]) / items  # popularity, catalogue, trending: one entry per item
    per_event = totals["event"] / len(events)
    events_per_day = 10_000_000
    window_hours = settings.deduplication_seconds / 3600
    report = {
        "events": len(events),
        "users": users,
        "items": items,
        "bytes": {k: totals[k] for k in sorted(totals)},
        "keys": {k: keys[k] for k in sorted(keys)},
        "reference_used_memory_delta_bytes": used,
        "per_user_bytes": round(per_user),
        "per_item_bytes": round(per_item),
        "per_event_in_window_bytes": round(per_event),
        "per_event_in_window_single_slot_bytes": round(single_slot_event_bytes / len(events)),
        "per_buffered_event_bytes": round(per_buffered),
        "estimate_gib": {
            "per_million_users": round(per_user * 1e6 / 2**30, 2),
            "per_million_items": round(per_item * 1e6 / 2**30, 2),
            "deduplication_at_10M_events_per_day": round(per_event * events_per_day * window_hours / 24 / 2**30, 2),
            "deduplication_window_hours": window_hours,
            "online_buffer_at_its_limit": round(settings.buffer_limit * per_buffered / 2**30, 4),
        },
    }
    log(f"{len(events)} events, {users} users, {items} items weighed")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
