"""`make dev`: RecLoop running locally until Ctrl-C; `make down` (python -m local.dev --down) stops it.

Brings up embedded Redis, LocalStack and the deployed SAM stack (see local/runtime.py), loads a small
generated demo catalogue and demo traffic through the API, trains an mf and an lgbm version on that traffic into
the stack's registry and promotes one (local/demo.py), and prints what to try next. On a terminal, the step under
way is drawn below the log lines: a bar with its ETA where its size is known (events sent, training rows), the
time so far where it is not (sam build, sam deploy).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
import urllib.request
from typing import Any

from local.demo import (
    DEMO_ITEMS,
    DEMO_USERS,
    DemoData,
    DemoModels,
    demo_data,
    interactions,
    promote_demo_champion,
    train_demo_models,
)
from local.processes import log
from local.runtime import AlreadyRunningError, RunningStack, down, running
from local.services import DEV, boto_client
from recloop.core.progress import Progress, no_progress, within
from recloop.tools.progress import TerminalProgress


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


def send_events(
    base_url: str, events: list[dict[str, Any]], progress: Progress = no_progress, step: str = "sending events"
) -> int:
    """Events through the API's batch route; the number it accepted."""
    accepted = 0
    for start in range(0, len(events), 500):
        _, reply = call(base_url, "POST", "/api/v1/events/batch", {"events": events[start : start + 500]})
        accepted += reply.get("accepted", 0) if isinstance(reply, dict) else 0
        progress(step, min(start + 500, len(events)), len(events))
    return accepted


def train_into_stack(stack: RunningStack, demo: DemoData, progress: Progress = no_progress) -> DemoModels:
    """The demo's two versions trained here, with the product's training code, into the stack's own registry.

    The stream consumer buffers the history for online learning in the order it was sent, one sequence number an
    event, in a buffer this fresh stack has just started: the versions record that they learned it through
    sequence len(history), so the first online update learns the live traffic, not the history again.
    """
    import redis

    from recloop.adapters.objects import ObjectStore
    from recloop.core.settings import Settings
    from recloop.features.store import FeatureStore
    from recloop.learning.online.buffer import OnlineBuffer
    from recloop.registry.model_registry import ModelRegistry

    redis_client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    objects = ObjectStore(boto_client(stack.profile, "s3"), stack.outputs["BucketName"])
    registry = ModelRegistry(objects, redis_client)
    learned_through = OnlineBuffer(redis_client, Settings()).position(len(demo.history))
    categories_of = FeatureStore(redis_client, Settings()).categories_of  # the catalogue was loaded first
    versions = train_demo_models(
        interactions(demo.history), registry, Settings(), learned_through, categories_of, progress=progress
    )
    return promote_demo_champion(registry, versions)


TRY_NEXT = """
RecLoop is running. The API is at {url} (Swagger UI: {url}/docs). Try:

  curl -X POST {url}/api/v1/event -H "Content-Type: application/json" \\
    -d '{{"user_id": "user_123", "item_id": "item_50", "event_type": "click"}}'
  curl -X POST {url}/api/v1/recommend -H "Content-Type: application/json" \\
    -d '{{"user_id": "user_123", "num_recommendations": 5}}'
  curl {url}/api/v1/health
  curl {url}/api/v1/metrics

Demo data: {items} items (item_0 .. item_{last_item}), {events} events from demo_user_0 .. demo_user_{last_user}.
{models}
Logs: .local/dev/logs/. Stop with Ctrl-C here, or `make down` from another shell.
"""

DEMO_MODELS = """
Demo models, trained on that traffic in {seconds:.0f} s:
{versions}
An online update of the champion publishes a child version (they are listed at {url}/api/v1/mlops/models):
  curl -X POST {url}/api/v1/mlops/online-learning/trigger
  curl {url}/api/v1/mlops/online-learning/status
An experiment between the two versions:
  curl -X POST {url}/api/v1/mlops/experiments -H "Content-Type: application/json" \\
    -d '{body}'
"""


def describe_models(url: str, models: DemoModels, seconds: float) -> str:
    versions = "\n".join(
        f"  {v.version}  {v.kind.value}, holdout HR@10 {v.holdout_hr_at_10:.3f}"
        + ("  (champion)" if v.version == models.champion else "")
        for v in models.versions
    )
    champion = next(v for v in models.versions if v.version == models.champion)
    challenger = next(v for v in models.versions if v.version != models.champion)
    body = {
        "name": f"{champion.kind.value} vs {challenger.kind.value}",
        "description": "The two versions trained on the demo traffic",
        "variants": [
            {"name": "champion", "model_version": models.champion},
            {"name": "challenger", "model_version": challenger.version},
        ],
        "allocation_strategy": "thompson_sampling",
        "traffic_percentage": 50.0,
    }
    return DEMO_MODELS.format(seconds=seconds, versions=versions, url=url, body=json.dumps(body))


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
        with TerminalProgress(prefix="[recloop] ") as progress, running(DEV, progress) as stack:
            serve(stack, args.no_demo, stop, progress)
    except AlreadyRunningError as exc:
        log(f"{exc}; `make down` stops it")


def serve(stack: RunningStack, no_demo: bool, stop: threading.Event, progress: TerminalProgress) -> None:
    url = stack.api_url
    events, models = 0, ""
    if not no_demo:
        loading = time.monotonic()
        progress("loading the demo catalogue")
        demo = demo_data()
        call(url, "POST", "/api/v1/items", {"items": demo.items})
        events = send_events(url, demo.history, progress, "sending the demo history")
        started = time.monotonic()
        trained = train_into_stack(stack, demo, within(progress, "demo models"))
        models = describe_models(url, trained, time.monotonic() - started)
        events += send_events(url, demo.live, progress, "sending live demo traffic")
        log(f"demo data and models in {time.monotonic() - loading:.1f} s")
    progress.close()  # the stack is up: nothing is under way while it serves
    print(
        TRY_NEXT.format(
            url=url,
            items=0 if no_demo else DEMO_ITEMS,
            last_item=DEMO_ITEMS - 1,
            events=events,
            last_user=DEMO_USERS - 1,
            models=models,
        ),
        flush=True,
    )
    stop.wait()
    log("stopping")


if __name__ == "__main__":
    main()
