"""`make dev`: RecLoop running locally until Ctrl-C; `make down` (python -m local.dev --down) stops it.

Brings up embedded Redis, LocalStack and the deployed SAM stack (see local/runtime.py), loads a small
generated demo catalogue and demo traffic through the API, and prints what to try next.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import urllib.request
from typing import Any

from local.processes import log
from local.runtime import AlreadyRunningError, down, running
from local.services import DEV

CATEGORIES = ["Drama", "Comedy", "Action", "Documentary", "Horror", "Romance", "Sci-Fi", "Animation"]
DEMO_ITEMS = 240
DEMO_USERS = 60


def call(base_url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def load_demo_data(base_url: str, seed: int = 42) -> dict[str, int]:
    """A generated catalogue in genres, and users who mostly stay within two favourite genres."""
    rng = random.Random(seed)
    items = [
        {"item_id": f"item_{n}", "categories": [CATEGORIES[n % len(CATEGORIES)]], "title": f"Demo title {n}"}
        for n in range(DEMO_ITEMS)
    ]
    call(base_url, "POST", "/api/v1/items", {"items": items})
    by_genre = {genre: [i["item_id"] for i in items if i["categories"][0] == genre] for genre in CATEGORIES}
    events = []
    for user in range(DEMO_USERS):
        favourites = rng.sample(CATEGORIES, 2)
        for _ in range(rng.randint(4, 12)):
            genre = rng.choice(favourites) if rng.random() < 0.85 else rng.choice(CATEGORIES)
            pool = by_genre[genre]
            item = pool[min(int(rng.expovariate(0.25)), len(pool) - 1)]  # a few hits per genre
            kind = rng.choices(["view", "click", "like", "purchase", "dislike"], [40, 30, 15, 10, 5])[0]
            events.append({"user_id": f"demo_user_{user}", "item_id": item, "event_type": kind})
    accepted = 0
    for start in range(0, len(events), 500):
        _, reply = call(base_url, "POST", "/api/v1/events/batch", {"events": events[start : start + 500]})
        accepted += reply.get("accepted", 0) if isinstance(reply, dict) else 0
    return {"items": len(items), "events": accepted}


TRY_NEXT = """
RecLoop is running. The API is at {url} (Swagger UI: {url}/docs). Try:

  curl -X POST {url}/api/v1/event -H "Content-Type: application/json" \\
    -d '{{"user_id": "user_123", "item_id": "item_50", "event_type": "click"}}'
  curl -X POST {url}/api/v1/recommend -H "Content-Type: application/json" \\
    -d '{{"user_id": "user_123", "num_recommendations": 5}}'
  curl {url}/api/v1/health
  curl {url}/api/v1/metrics

Demo data: {items} items (item_0 .. item_{last_item}), {events} events from demo_user_0 .. demo_user_{last_user}.
Logs: .local/dev/logs/. Stop with Ctrl-C here, or `make down` from another shell.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--down", action="store_true", help="stop a running `make dev` and everything it started")
    parser.add_argument("--no-demo", action="store_true", help="do not load the demo catalogue and traffic")
    args = parser.parse_args()
    if args.down:
        stopped = down(DEV)
        log("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with running(DEV) as stack:
            serve(stack.api_url, args.no_demo, stop)
    except AlreadyRunningError as exc:
        log(f"{exc}; `make down` stops it")


def serve(url: str, no_demo: bool, stop: threading.Event) -> None:
    demo = {"items": 0, "events": 0} if no_demo else load_demo_data(url)
    print(
        TRY_NEXT.format(
            url=url, items=demo["items"], last_item=DEMO_ITEMS - 1, events=demo["events"], last_user=DEMO_USERS - 1
        ),
        flush=True,
    )
    stop.wait()
    log("stopping")


if __name__ == "__main__":
    main()
