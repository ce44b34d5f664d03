"""The dashboard page in headless Chromium (Debian's, driven by Playwright) against the stack in LocalStack.

The stack first gets something to show, through its own paths: archived events and a forced retrain (a champion
with a drift reference, a finished state machine run), an experiment against a second version with recommendations
and conversions, an online update, and a scheduled drift check. The page must then draw every chart from that data,
name the champion the API names, log no console error, and ask nothing of any host but the local stack. A
screenshot of it is left in test-artifacts/. /redoc renders, and Swagger's "Try it out" on POST /api/v1/recommend
gets a 200 through the same URL a user opens.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.runtime import RunningStack
from tests.e2e.conftest import Http, drain_stream
from tests.e2e.test_experiments import guide_body
from tests.e2e.test_online_learning import register_small_mf, wait_for
from tests.e2e.test_retraining import archive_some_taste, finished_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# No sandbox (root in CI), and nothing Chromium would fetch by itself: the test fails any request to another host.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"localhost", "127.0.0.1"}
CHARTS = ("latency", "events", "held-out-error", "conversion", "drift-score")
EXPERIMENTS = "/api/v1/mlops/experiments"
RETRAIN_STATUS = "/api/v1/mlops/retrain/status"
USERS = [f"user{n}" for n in range(60)]  # archive_some_taste's users


@pytest.fixture(autouse=True)
def empty_bucket_after(stack: RunningStack, aws: Any, http: Http) -> Iterator[None]:
    """Other tests expect no versions, champion, experiment, drift report or retrain in flight."""
    yield
    wait_for(lambda: not http.get(RETRAIN_STATUS)[1]["retraining_in_progress"], "no retrain in flight", 600)
    s3, bucket = aws("s3"), stack.outputs["BucketName"]
    for prefix in ("models/", "checkpoints/", "experiments/", "datasets/", "candidates/", "drift/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


def retrained_champion(http: Http, stack: RunningStack) -> str:
    archive_some_taste(http, stack)
    status, started = http.post("/api/v1/mlops/retrain", {"force": True, "reason": "e2e: the dashboard's champion"})
    assert status == 200 and started["triggered"], started
    run = finished_run(http)["last_run"]
    assert run["outcome"] == "succeeded", run
    return http.get("/api/v1/mlops/models")[1]["champion"]["version"]


def run_an_experiment(http: Http, stack: RunningStack, aws: Any, stack_redis: Any, champion: str) -> str:
    """The champion against a small MF; every user asks for recommendations and a third click one."""
    _, challenger = register_small_mf(stack, aws, stack_redis, prefix="mf-e2e-dashboard")
    status, created = http.post(EXPERIMENTS, guide_body(champion, challenger))
    assert status == 201, created
    experiment_id = created["experiment_id"]
    assert http.post(f"{EXPERIMENTS}/{experiment_id}/start", None)[0] == 200
    time.sleep(6)  # recommend instances re-read the running experiments every few seconds
    for n, user in enumerate(USERS):
        status, served = http.post("/api/v1/recommend", {"user_id": user, "num_recommendations": 5})
        assert status == 200, served
        if n % 3 == 0 and served["items"]:
            click = {"user_id": user, "item_id": served["items"][0]["item_id"], "event_type": "click"}
            assert http.post("/api/v1/event", {**click, "recommendation_id": served["recommendation_id"]})[0] == 202
    return experiment_id


def an_online_update(http: Http, stack: RunningStack) -> None:
    """A buffer's worth of likes after the champion exists: the online update that judges it."""
    run = uuid.uuid4().hex[:6]
    likes = [{"user_id": user, "item_id": f"a{n % 6}-{run}", "event_type": "like"} for n, user in enumerate(USERS)]
    assert http.post("/api/v1/events/batch", {"events": likes})[0] == 202
    drain_stream(stack)

    def judged() -> bool:
        updates = http.get("/api/v1/mlops/online-learning/status")[1]["recent_updates"]
        return any(u["error_before"] is not None for u in updates)

    wait_for(judged, "an online update with a held-out error")


class Browser:
    """Headless Chromium on a fresh profile; every request to a host other than the stack's fails and is kept."""

    def __init__(self, playwright: Any, profile: str) -> None:
        self.context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._only_local)

    def _only_local(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def open(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(url)
        return page

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def try_it_out(swagger: Any, path: str) -> str:
    """What a new user does in Swagger UI: open the POST operation, "Try it out", "Execute" its example; the
    response's status code as the page shows it."""
    operation = swagger.locator(f'.opblock-post:has(.opblock-summary-path[data-path="{path}"])')
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=30_000)
    return status.inner_text().strip()


@pytest.fixture
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run `make system-deps`"
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="recloop-chromium-") as profile:
        opened = Browser(playwright, profile)
        yield opened
        opened.context.close()


def test_the_dashboard_draws_the_stacks_live_data_with_nothing_from_outside(
    http: Http, stack: RunningStack, aws: Any, stack_redis: Any, browser: Browser
) -> None:
    champion = retrained_champion(http, stack)
    experiment_id = run_an_experiment(http, stack, aws, stack_redis, champion)
    an_online_update(http, stack)
    wait_for(lambda: http.get("/api/v1/mlops/drift")[1]["latest"], "a scheduled drift check's report", 180)
    serving = http.get("/api/v1/mlops/models")[1]["champion"]["version"]  # the online update may have moved it

    page = browser.open(f"{stack.api_url}/api/v1/dashboard")
    page.wait_for_selector("body[data-refreshes]", timeout=120_000)
    page.click("#refresh")  # a second poll: the conversion chart has two samples
    page.wait_for_selector('body[data-refreshes="2"]', timeout=120_000)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"dashboard screenshot: {screenshot}")

    points = {name: int(page.get_attribute(f'[data-chart="{name}"]', "data-points") or 0) for name in CHARTS}
    assert all(points.values()), points
    assert page.locator("[data-chart] canvas").count() == len(CHARTS)
    assert page.inner_text("#champion-version") == serving
    assert champion in page.inner_text("#models .lineage")
    experiments = page.inner_text("#experiments")
    assert "LightGBM vs Neural CF" in experiments and "challenger" in experiments
    assert page.inner_text("#execution-status") == "SUCCEEDED"
    assert "1 manual" in page.inner_text("#retraining")  # the forced retrain
    assert page.locator(".problem:not([hidden])").count() == 0

    redoc = browser.open(f"{stack.api_url}/redoc")
    redoc.get_by_text("/api/v1/recommend", exact=True).first.wait_for(timeout=60_000)
    assert try_it_out(browser.open(f"{stack.api_url}/docs"), "/api/v1/recommend") == "200"
    assert browser.errors == [] and browser.foreign == []

    assert http.post(f"{EXPERIMENTS}/{experiment_id}/stop", None)[0] == 200
