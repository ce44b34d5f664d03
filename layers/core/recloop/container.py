"""The process-wide wiring of settings, clients and domain services, created once per Lambda instance.

Container a function may never use (the registry, online learning, the stream consumer) are built on first use
and imported then, so each function's cold start loads only what it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from recloop.adapters.aws import aws_client, forget_clients
from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import RedisClient, connect
from recloop.adapters.redis_credentials import secret_credentials
from recloop.adapters.stream import KinesisEventStream
from recloop.core.settings import Settings, get_settings
from recloop.features.store import FeatureStore
from recloop.ingest.producer import IngestService
from recloop.serving.recommender import Recommender

if TYPE_CHECKING:
    from recloop.access.keys import SigningKeys
    from recloop.drift.lineage import LineageObserver
    from recloop.drift.reference import ReferenceStore
    from recloop.drift.service import DriftService
    from recloop.drift.window import DriftWindow
    from recloop.experiments.attribution import Attribution
    from recloop.experiments.counters import ExperimentCounters
    from recloop.experiments.router import ExperimentRouter, RunningExperiments
    from recloop.experiments.service import ExperimentService
    from recloop.experiments.store import ExperimentStore
    from recloop.ingest.consumer import DeadLetters, StreamConsumer
    from recloop.learning.online.learner import OnlineLearner
    from recloop.registry.model_registry import ModelRegistry
    from recloop.retraining.service import RetrainService
    from recloop.retraining.status import RetrainStatusStore
    from recloop.retraining.training_jobs import SageMakerTraining
    from recloop.retraining.workflow import RetrainWorkflow
    from recloop.serving.champion import ChampionProvider


@dataclass
class Container:
    settings: Settings

    @cached_property
    def redis(self) -> RedisClient:
        # The AUTH token is read from its secret when a connection first needs it: a missing or unreadable secret
        # fails Redis calls (as an unreachable Redis would), never the cold start.
        return connect(self.settings, secret_credentials(self.settings))

    @cached_property
    def store(self) -> FeatureStore:
        return FeatureStore(self.redis, self.settings)

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.aws_client("s3"), self.settings.bucket_name)

    @cached_property
    def stream(self) -> KinesisEventStream:
        return KinesisEventStream(self.aws_client("kinesis"), self.settings.stream_name)

    @cached_property
    def registry(self) -> ModelRegistry:
        from recloop.registry.model_registry import ModelRegistry

        return ModelRegistry(self.objects, self.redis)

    @cached_property
    def champion(self) -> ChampionProvider:
        from recloop.serving.champion import ChampionProvider

        return ChampionProvider(lambda: self.registry, self.store, self.settings, self.settings.model_check_seconds)

    @cached_property
    def recommender(self) -> Recommender:
        return Recommender(self.store, self.settings, self.champion, observe_scored=self.observe_scored)

    def observe_scored(self, pipe: Any, model_version: str, rows: Any, scores: Any) -> None:
        """A request's ranker-scored candidates into its lineage's drift window, on the recommendation log's
        pipeline."""
        self.drift_lineage(pipe, model_version, rows, scores)

    @cached_property
    def experiment_store(self) -> ExperimentStore:
        from recloop.experiments.store import ExperimentStore

        return ExperimentStore(self.objects, self.redis)

    @cached_property
    def experiment_counters(self) -> ExperimentCounters:
        from recloop.experiments.counters import ExperimentCounters

        return ExperimentCounters(self.redis)

    @cached_property
    def running_experiments(self) -> RunningExperiments:
        """The running experiments as the recommend and event paths see them (re-read about every second)."""
        from recloop.experiments.router import RunningExperiments

        # Lazy: the store (and its S3 client) is made on the first read, not when the event path is wired.
        return RunningExperiments(lambda: self.experiment_store.running())  # noqa: PLW0108

    @cached_property
    def experiment_router(self) -> ExperimentRouter:
        from recloop.experiments.router import ExperimentRouter, VersionModels

        return ExperimentRouter(self.running_experiments, self.experiment_counters, VersionModels(self.champion))

    @cached_property
    def attribution(self) -> Attribution:
        from recloop.experiments.attribution import Attribution

        return Attribution(
            self.redis, self.running_experiments, self.experiment_counters, self.settings.attribution_window_seconds
        )

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.store, self.stream, self.attribution)

    @cached_property
    def stream_consumer(self) -> StreamConsumer:
        from recloop.ingest.consumer import StreamConsumer
        from recloop.learning.online.buffer import OnlineBuffer

        buffer = OnlineBuffer(self.redis, self.settings)
        return StreamConsumer(self.store, self.objects, buffer, self.retrain_status, self.drift_window)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        from recloop.adapters.queues import Queue
        from recloop.ingest.consumer import DeadLetters

        if not self.settings.dead_letter_queue_url:
            raise ValueError("the stream consumer needs a dead-letter queue (DEAD_LETTER_QUEUE_URL)")
        return DeadLetters(Queue(self.aws_client("sqs"), self.settings.dead_letter_queue_url))

    @cached_property
    def online_learner(self) -> OnlineLearner:
        from recloop.learning.online.learner import OnlineLearner

        return OnlineLearner(self.redis, self.registry, self.settings)

    @cached_property
    def experiments(self) -> ExperimentService:
        from recloop.experiments.service import ExperimentService

        return ExperimentService(
            self.experiment_store,
            self.experiment_counters,
            self.registry,
            default_allocation_strategy=self.settings.default_allocation_strategy,
            default_traffic_percentage=self.settings.default_traffic_percentage,
        )

    @cached_property
    def retrain_status(self) -> RetrainStatusStore:
        from recloop.retraining.status import RetrainStatusStore

        return RetrainStatusStore(self.redis, self.settings.retrain_lock_seconds)

    @cached_property
    def retraining(self) -> RetrainService:
        from recloop.adapters.workflows import StepFunctions
        from recloop.drift.reports import DriftReports
        from recloop.learning.online.stats import OnlineStats
        from recloop.retraining.launcher import NotConfiguredLauncher, RetrainLauncher, StateMachineLauncher
        from recloop.retraining.performance import FirstReading, LiveHitRate, OnlineHeldOutError
        from recloop.retraining.service import RetrainService

        arn = self.settings.retrain_state_machine_arn
        launcher: RetrainLauncher = (
            StateMachineLauncher(StepFunctions(self.aws_client("stepfunctions")), arn)
            if arn
            else NotConfiguredLauncher()
        )
        stats = OnlineStats(self.redis)
        performance = FirstReading(
            LiveHitRate(stats, self.settings.performance_min_positives), OnlineHeldOutError(stats)
        )
        return RetrainService(self.retrain_status, DriftReports(self.objects), performance, launcher, self.settings)

    @cached_property
    def drift_window(self) -> DriftWindow:
        from recloop.drift.window import DriftWindow

        return DriftWindow(self.redis)

    @cached_property
    def drift_references(self) -> ReferenceStore:
        """Drift references, and which version carries each version's (remembered for the instance's life)."""
        from recloop.drift.reference import ReferenceStore

        return ReferenceStore(self.objects)

    @cached_property
    def drift_lineage(self) -> LineageObserver:
        from recloop.drift.lineage import LineageObserver

        return LineageObserver(self.drift_window, self.drift_references)

    @cached_property
    def drift(self) -> DriftService:
        from recloop.drift.baselines import ServedBaselines
        from recloop.drift.detector import DriftDetector
        from recloop.drift.reports import DriftReports
        from recloop.drift.service import DriftService

        detector = DriftDetector(threshold=self.settings.drift_threshold)
        return DriftService(
            self.registry,
            self.drift_references,
            ServedBaselines(self.objects),
            self.drift_window,
            DriftReports(self.objects),
            detector=detector,
        )

    @cached_property
    def retrain_workflow(self) -> RetrainWorkflow:
        from recloop.retraining.workflow import RetrainWorkflow

        return RetrainWorkflow(
            self.retraining,
            self.objects,
            self.registry,
            self.experiments,
            self.settings,
            categories_of=self.store.categories_of,
        )

    @cached_property
    def sagemaker_training(self) -> SageMakerTraining:
        from recloop.retraining.training_jobs import SageMakerTraining

        return SageMakerTraining(self.objects, self.registry, self.settings)

    @cached_property
    def signing_keys(self) -> SigningKeys:
        """The keys of client tokens (the authorizer function verifies with them)."""
        from recloop.access.keys import SigningKeys
        from recloop.adapters.secrets import Secret

        if not self.settings.auth_signing_secret_arn:
            raise ValueError("verifying client tokens needs AUTH_SIGNING_SECRET_ARN")
        return SigningKeys(Secret(self.settings.auth_signing_secret_arn, self.settings.aws_region))

    def aws_client(self, name: str, probe: bool = False) -> Any:
        return aws_client(name, self.settings.aws_region, "probe" if probe else "default")

    def invoke_client(self) -> Any:
        """A Lambda client for synchronous invocations that last as long as the invoked work (no SDK retries)."""
        return aws_client("lambda", self.settings.aws_region, "invoke")

    def probes(self) -> tuple[ObjectStore, KinesisEventStream]:
        """The bucket and the stream through clients that try once, quickly (health checks).

        The bucket is probed by listing under the registry's prefix: the public routes' role may list only that.
        """
        from recloop.registry.versions import MODELS_PREFIX

        return (
            ObjectStore(self.aws_client("s3", probe=True), self.settings.bucket_name or "-", MODELS_PREFIX),
            KinesisEventStream(self.aws_client("kinesis", probe=True), self.settings.stream_name),
        )


@lru_cache(maxsize=1)
def get_container() -> Container:
    return Container(get_settings())


def reset_container() -> None:
    """Forget settings and clients (tests change the environment between cases)."""
    get_container.cache_clear()
    get_settings.cache_clear()
    forget_clients()
