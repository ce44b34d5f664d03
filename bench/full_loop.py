"""The `full_loop` replay configuration: online learning plus retraining started by the product's own triggers.

It is `online` (the same LightGBM champion trained on the warm-up half, the same buffered online updates), with
the half of the loop that decides running on the data's clock:

- every hour of event time, what the hourly drift-check state machine does: `DriftService.check` on the live
  window (served traffic offered by the Recommender's `LineageObserver`, events by the stream consumer's rows),
  then `RetrainService.request(force=False)`: the trigger code (drift, performance, volume, schedule, with the
  product's default DRIFT_THRESHOLD, RETRAIN_INTERVAL_HOURS, MIN_NEW_INTERACTIONS, PERFORMANCE_*);
- the performance trigger reads the champion's live hit rate, which each online update measures on its buffer
  (`recloop.retraining.performance.LiveHitRate`), recorded with the event time;
- a started retrain runs what the retrain state machine runs: `record_started`, `train_candidate` on every event
  seen so far (the archive), the gate against the model in service as it stood before the time-split holdout
  (`champion_baseline`), register and promote (RETRAIN_DEPLOYMENT=promote: a canary would need live traffic to
  split), `record_finished`. It runs synchronously between two events: minutes of training are nothing on a clock
  that moves months in a replay.

The status, lock and counters are the product's in the replay's Redis; the registry, drift references, served
baselines and drift reports are the product's in S3, here moto's in-process S3.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import log
from bench.online import OnlineLearning
from recloop.core.events import Interaction
from recloop.learning.evaluation import ReplayContext

CHECK_INTERVAL_SECONDS = 3600.0  # the drift-check schedule's default rate (rate(1 hour))
OFFER_BATCH = 100  # events offered to the drift window and counted as new interactions per call (the consumer's batch)
BUCKET = "recloop-replay-artifacts"
REGION = "us-east-1"


class FullLoop(OnlineLearning):
    def __init__(self, context: ReplayContext) -> None:
        super().__init__(context)
        from moto import mock_aws

        from recloop.adapters.aws import aws_client
        from recloop.adapters.objects import ObjectStore
        from recloop.drift.baselines import ServedBaselines
        from recloop.drift.detector import DriftDetector
        from recloop.drift.lineage import LineageObserver
        from recloop.drift.reference import ReferenceStore
        from recloop.drift.reports import DriftReports
        from recloop.drift.service import DriftService
        from recloop.drift.window import DriftWindow
        from recloop.learning.online.stats import OnlineStats
        from recloop.registry.model_registry import ModelRegistry
        from recloop.retraining.performance import FirstReading, LiveHitRate, OnlineHeldOutError
        from recloop.retraining.service import RetrainService
        from recloop.retraining.status import RetrainStatusStore
        from recloop.serving.recommender import Recommender

        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            os.environ.setdefault(name, value)
        self.aws = mock_aws()
        self.aws.start()
        s3 = aws_client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        objects = ObjectStore(s3, BUCKET)
        settings, redis = context.settings, context.redis

        self.registry = ModelRegistry(objects, redis)
        references = ReferenceStore(objects)
        self.window = DriftWindow(redis)
        self.drift = DriftService(
            self.registry,
            references,
            ServedBaselines(objects),
            self.window,
            DriftReports(objects),
            detector=DriftDetector(threshold=settings.drift_threshold),
        )
        self.stats = OnlineStats(redis)
        self.launcher = ReplayLauncher()
        self.retraining = RetrainService(
            RetrainStatusStore(redis, settings.retrain_lock_seconds),
            DriftReports(objects),
            FirstReading(LiveHitRate(self.stats, settings.performance_min_positives), OnlineHeldOutError(self.stats)),
            self.launcher,
            settings,
            clock=lambda: datetime.fromtimestamp(self.now, UTC),
        )
        # Logged requests, as the recommend Lambda serves them: the served window gets its sample of each.
        self.recommender = Recommender(
            context.store, settings, lambda: self.served, observe_scored=LineageObserver(self.window, references)
        )
        self.now = 0.0
        self.next_check: float | None = None
        self.seen: list[Interaction] = []
        self.unoffered: list[Interaction] = []
        self.retrains: list[dict[str, Any]] = []
        self.checks = 0
        self.drifted_checks = 0

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self, warmup: list[Interaction]) -> None:
        self.seen = list(warmup)
        self.now = warmup[-1].timestamp
        started = time.perf_counter()
        self._train_and_deploy(None)
        self.fit_info["train_seconds"] = round(time.perf_counter() - started, 1)
        self.retraining.store.start_counting(datetime.fromtimestamp(self.now, UTC))

    def recommend(self, user_id: str, k: int, now: float) -> list[str]:
        result = self.recommender.recommend(user_id, k, now=now, log=True)
        self.models[result.model_version] += 1
        self.observe(result)
        return [item.item_id for item in result.items]

    def ingest(self, event: Interaction) -> None:
        if self.next_check is None:
            self.next_check = _next_boundary(event.timestamp)
        if event.timestamp >= self.next_check:
            self.now = self.next_check
            self._scheduled_check()
            self.next_check = _next_boundary(event.timestamp)
        self.now = event.timestamp
        super().ingest(event)
        self.seen.append(event)
        self.unoffered.append(event)
        if len(self.unoffered) >= OFFER_BATCH:
            self._offer()

    def publish(self, model: Any, events: list[Interaction], record: Any) -> str:
        """As the online-update function publishes: registered as a child of the champion, then promoted."""
        from recloop.learning.online.update import published_metadata

        parent = self.registry.get(self.served.version)
        metadata = published_metadata(parent, events, self.hyperparameters, record, None)
        self.registry.register(model.to_bundle(metadata))
        self.registry.promote(metadata.version, record.describe(), expected_current=parent.version)
        return metadata.version

    def updated(self, record: Any) -> None:
        self.stats.record(record, now=self.now)

    def _offer(self) -> None:
        """What the stream consumer does with each batch: the events into the drift window, the new ones counted."""
        from recloop.drift.reference import event_rows

        if self.unoffered:
            self.window.observe_events(event_rows(self.unoffered, self.context.store.categories_of))
            self.retraining.store.add_new_interactions(len(self.unoffered))
            self.unoffered = []

    def _scheduled_check(self) -> None:
        """The drift-check state machine: check drift, decide, start a retrain (here: run it)."""
        self._offer()
        report = self.drift.check(now=datetime.fromtimestamp(self.now, UTC))
        self.checks += 1
        self.drifted_checks += report.drifted
        self.retraining.request(force=False)
        if self.launcher.started:
            name, execution_input = self.launcher.started.pop()
            self._retrain(name, execution_input)

    def _retrain(self, name: str, execution_input: dict[str, Any]) -> None:
        from recloop.retraining.model import RetrainTrigger

        trigger = RetrainTrigger(execution_input["trigger"])
        started = time.perf_counter()
        self.retraining.record_started(name, trigger, execution_input["reason"])
        outcome = self._train_and_deploy(name)
        self.retraining.record_finished(name)
        self.retrains.append(
            {
                "execution_name": name,
                "trigger": trigger.value,
                "reason": execution_input["reason"],
                "at": datetime.fromtimestamp(self.now, UTC).isoformat(timespec="seconds"),
                "events": len(self.seen),
                "seconds": round(time.perf_counter() - started, 1),
                **outcome,
            }
        )
        run = self.retrains[-1]
        log(
            f"[full_loop] retrain ({run['trigger']}) at {run['at']} on {run['events']} events, {run['seconds']}s: "
            f"{run['gate']}"
        )

    def _train_and_deploy(self, execution_name: str | None) -> dict[str, Any]:
        """The retrain state machine's train, gate, register and promote, on every event seen so far."""
        from recloop.learning.training import train_candidate
        from recloop.models.bundle import ModelKind
        from recloop.models.loading import load_model
        from recloop.registry.versions import new_version_id
        from recloop.retraining.workflow import Candidate, champion_baseline, gate, plan_holdout
        from recloop.serving.champion import TrainedModel

        plan = plan_holdout(self.registry, self.seen)
        parent, baseline = champion_baseline(self.registry, plan.holdout_start)
        result = train_candidate(
            ModelKind.LGBM,
            self.seen,
            self.context.settings,
            new_version_id(ModelKind.LGBM),
            holdout_fraction=plan.holdout_fraction,
            champion=self.registry.load(baseline) if baseline is not None else None,
            parent_version=parent,
            categories_of=self.context.store.categories_of,
        )
        version = result.bundle.metadata.version
        candidate = Candidate(
            candidate_prefix=f"candidates/{execution_name}/",
            version=version,
            kind=ModelKind.LGBM,
            candidate_hr=result.candidate_hr,
            champion_hr=result.champion_hr,
            champion_version=baseline,
            candidate_metrics=result.candidate_metrics,
            champion_metrics=result.champion_metrics,
        )
        verdict = gate(candidate, self.context.settings.retrain_min_improvement)
        if verdict.passed:
            self.registry.register(result.bundle)
            self.registry.promote(version, verdict.reason, expected_current=parent)
            self.served = TrainedModel(
                version, ModelKind.LGBM, load_model(result.bundle), self.context.store, self.context.settings
            )
        return {
            "version": version,
            "promoted": verdict.passed,
            "gate": verdict.reason,
            "candidate_hr": result.candidate_hr,
            "champion_hr": result.champion_hr,
        }

    def details(self) -> dict[str, Any]:
        status = self.retraining.store.read()
        return {
            **super().details(),
            "drift_checks": self.checks,
            "drifted_checks": self.drifted_checks,
            "retrain_metrics": status.metrics.model_dump(),
            "retrains": self.retrains,
        }

    def close(self) -> None:
        super().close()
        self.aws.stop()


class ReplayLauncher:
    """The retrain launcher of a replay: a started retrain is run by the replay itself, at once."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any]]] = []

    def require_configured(self) -> None:
        return None

    def launch(self, execution_name: str, execution_input: Any) -> str:
        self.started.append((execution_name, dict(execution_input)))
        return f"replay:{execution_name}"

    def progress(self, execution_arn: str) -> None:
        return None


def _next_boundary(timestamp: float) -> float:
    return (timestamp // CHECK_INTERVAL_SECONDS + 1) * CHECK_INTERVAL_SECONDS
