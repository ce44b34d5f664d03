"""Regenerate the API Gateway samples in events/: one proxy event per HTTP scenario, for `sam local invoke -e`.

Each event starts as the output of `sam local generate-event apigateway aws-proxy` and is then edited into the
shape API Gateway really sends for a JSON API: the body as a plain JSON string (isBase64Encoded false), JSON
headers, no sample query string, path parameters or stage variables, and the guide's example bodies.

Samples live at events/<function>/<scenario>.json (see events/README.md); ROUTES lists the HTTP ones (event/,
recommend/, ops/, mlops/) by that path. The Kinesis, direct-invocation and authorizer samples (online_update/,
train/, authorizer/) and every .response.json are written by hand: this script neither writes nor checks them.

    .venv/bin/python -m local.generate_events            # rewrite the HTTP samples in events/
    .venv/bin/python -m local.generate_events --check    # exit 1 when one of them is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = ROOT / "events"
STAGE = "v1"
# Fixed so that regenerating gives byte-identical files.
REQUEST_TIME = "27/Nov/2026:12:00:00 +0000"
REQUEST_TIME_EPOCH_MS = 1795780800000


@dataclass(frozen=True)
class Route:
    path: str  # relative to events/: <function>/<scenario>.json
    method: str
    resource: str
    body: Any = None  # JSON-serialisable request body; None for requests without one
    accept: str = "application/json"
    path_parameters: dict[str, str] | None = None  # the values of the resource's {placeholders}

    @property
    def request_path(self) -> str:
        """The request path: the resource with its placeholders filled in."""
        return self.resource.format_map(self.path_parameters or {})


GUIDE_EXPERIMENT = {
    "name": "LightGBM vs Neural CF",
    "description": "Compare traditional vs deep learning approach",
    "variants": [
        {"name": "champion", "model_path": "/app/models/lgbm_v1.pkl", "model_version": "mf-online-test-0"},
        {"name": "challenger", "model_path": "/app/models/neural_cf_v2.pkl", "model_version": "mf-challenger"},
    ],
    "allocation_strategy": "thompson_sampling",
    "traffic_percentage": 50.0,
}
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # what a browser asks for
EXPERIMENT = {"experiment_id": "exp_a1b2c3d4e5f6"}  # the guide's example id (the samples' setup creates it)
EXPERIMENTS = "/api/v1/mlops/experiments"
RETRAIN = "/api/v1/mlops/retrain"


ROUTES: tuple[Route, ...] = (
    Route(
        "event/record_a_click.json",
        "POST",
        "/api/v1/event",
        {"user_id": "user_123", "item_id": "item_50", "event_type": "click"},
    ),
    Route(
        "event/record_a_batch.json",
        "POST",
        "/api/v1/events/batch",
        {
            "events": [
                {"user_id": "user_123", "item_id": "item_50", "event_type": "view"},
                {"user_id": "user_123", "item_id": "item_50", "event_type": "click"},
                {"user_id": "user_123", "item_id": "item_51", "event_type": "like"},
                {"user_id": "user_456", "item_id": "item_50", "event_type": "purchase"},
            ]
        },
    ),
    Route(
        "event/record_a_batch_with_one_bad_event.json",
        "POST",
        "/api/v1/events/batch",
        {
            "events": [
                {"user_id": "user_123", "item_id": "item_50", "event_type": "view"},
                {"user_id": "user_123", "item_id": "item_51", "event_type": "share"},
                {"user_id": "user_456", "item_id": "item_50", "event_type": "purchase"},
            ]
        },
    ),
    Route(
        "event/reject_an_unknown_event_type.json",
        "POST",
        "/api/v1/event",
        {"user_id": "user_123", "item_id": "item_50", "event_type": "share"},
    ),
    Route(
        "event/retry_an_event_with_the_same_event_id.json",
        "POST",
        "/api/v1/event",
        {"user_id": "user_123", "item_id": "item_50", "event_type": "purchase", "event_id": "evt_client_0001"},
    ),
    Route(
        "event/upsert_items.json",
        "POST",
        "/api/v1/items",
        {
            "items": [
                {"item_id": "item_50", "categories": ["Drama"], "title": "The Shawshank Redemption (1994)"},
                {"item_id": "item_51", "categories": ["Comedy", "Romance"], "title": "Groundhog Day (1993)"},
            ]
        },
    ),
    Route(
        "recommend/recommend_known_user.json",
        "POST",
        "/api/v1/recommend",
        {"user_id": "user_123", "num_recommendations": 5},
    ),
    Route(
        "recommend/recommend_cold_user.json",
        "POST",
        "/api/v1/recommend",
        {"user_id": "user_789", "num_recommendations": 3},
    ),
    Route("ops/health.json", "GET", "/api/v1/health"),
    Route("ops/metrics.json", "GET", "/api/v1/metrics"),
    Route("ops/docs.json", "GET", "/docs", accept=HTML),
    Route("ops/redoc.json", "GET", "/redoc", accept=HTML),
    Route("ops/dashboard.json", "GET", "/api/v1/dashboard", accept=HTML),
    Route("mlops/list_models.json", "GET", "/api/v1/mlops/models"),
    Route("mlops/online_learning_status.json", "GET", "/api/v1/mlops/online-learning/status"),
    Route("mlops/trigger_online_update_with_empty_buffer.json", "POST", "/api/v1/mlops/online-learning/trigger"),
    Route(
        "mlops/rollback_online_update_with_nothing_to_roll_back.json",
        "POST",
        "/api/v1/mlops/online-learning/rollback",
        {},
    ),
    Route("mlops/create_an_experiment.json", "POST", EXPERIMENTS, GUIDE_EXPERIMENT),
    Route(
        "mlops/create_an_experiment_with_an_unknown_version.json",
        "POST",
        EXPERIMENTS,
        {
            **GUIDE_EXPERIMENT,
            "variants": [
                {"name": "champion", "model_version": "mf-online-test-0"},
                {"name": "challenger", "model_version": "v2.0"},
            ],
        },
    ),
    Route("mlops/list_experiments.json", "GET", EXPERIMENTS),
    Route("mlops/start_an_experiment.json", "POST", EXPERIMENTS + "/{experiment_id}/start", path_parameters=EXPERIMENT),
    Route(
        "mlops/start_a_stopped_experiment.json",
        "POST",
        EXPERIMENTS + "/{experiment_id}/start",
        path_parameters=EXPERIMENT,
    ),
    Route("mlops/experiment_results.json", "GET", EXPERIMENTS + "/{experiment_id}", path_parameters=EXPERIMENT),
    Route("mlops/stop_an_experiment.json", "POST", EXPERIMENTS + "/{experiment_id}/stop", path_parameters=EXPERIMENT),
    Route("mlops/retrain_status.json", "GET", "/api/v1/mlops/retrain/status"),
    Route("mlops/retrain_manually.json", "POST", RETRAIN, {"force": True, "reason": "Manual trigger for testing"}),
    Route("mlops/retrain_manually_while_one_runs.json", "POST", RETRAIN, {"force": True}),
    Route("mlops/retrain_if_a_trigger_fires.json", "POST", RETRAIN, {"force": False}),
    Route("mlops/retrain_with_an_invalid_force.json", "POST", RETRAIN, {"force": "yes"}),
    Route("mlops/drift_reports.json", "GET", "/api/v1/mlops/drift"),
)


def _sam() -> str:
    local = Path(sys.executable).with_name("sam")
    found = str(local) if local.exists() else shutil.which("sam")
    if not found:
        raise SystemExit("sam not found: run `make setup` (it installs aws-sam-cli into .venv)")
    return found


def generate(route: Route) -> dict[str, Any]:
    """`sam local generate-event` for the route, then the edits described in the module docstring."""
    body = "" if route.body is None else json.dumps(route.body, separators=(",", ":"))
    command = [
        _sam(),
        "local",
        "generate-event",
        "apigateway",
        "aws-proxy",
        "--method",
        route.method,
        "--path",
        route.request_path.lstrip("/"),  # sam prepends the slash itself
        "--resource",
        route.resource,
        "--stage",
        STAGE,
        "--body",
        body,
    ]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    event = json.loads(result.stdout)

    event["body"] = None if route.body is None else json.dumps(route.body)
    event["isBase64Encoded"] = False
    event["queryStringParameters"] = None
    event["multiValueQueryStringParameters"] = None
    event["pathParameters"] = route.path_parameters
    event["stageVariables"] = None

    headers = {
        key: value
        for key, value in event["headers"].items()
        if not key.startswith("CloudFront-") and key not in ("Cache-Control", "Upgrade-Insecure-Requests")
    }
    headers["Accept"] = route.accept
    headers["Accept-Encoding"] = "gzip, deflate"
    headers["Host"] = "1234567890.execute-api.us-east-1.amazonaws.com"
    headers["User-Agent"] = "recloop-sample/1.0"
    if route.body is not None:
        headers["Content-Type"] = "application/json"
    event["headers"] = dict(sorted(headers.items()))
    event["multiValueHeaders"] = {key: [value] for key, value in event["headers"].items()}

    context = event["requestContext"]
    assert context["path"] == f"/{STAGE}{route.request_path}", context["path"]
    assert context["resourcePath"] == route.resource and context["httpMethod"] == route.method
    context["requestTime"] = REQUEST_TIME
    context["requestTimeEpoch"] = REQUEST_TIME_EPOCH_MS
    context["identity"]["userAgent"] = headers["User-Agent"]
    return event


def render(event: dict[str, Any]) -> str:
    return json.dumps(event, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    parser.add_argument("--out", type=Path, default=EVENTS_DIR, help="output directory (default: events/)")
    args = parser.parse_args(argv)

    stale = []
    for route in ROUTES:
        path = args.out / route.path
        text = render(generate(route))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(route.path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
