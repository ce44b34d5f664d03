"""The process-wide wiring of settings, clients and domain services (created once per Lambda instance)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from recloop.features import FeatureStore
from recloop.ingest import IngestService, KinesisEventStream
from recloop.recommender import Recommender
from recloop.settings import Settings, get_settings
from recloop.store import RedisClient, connect

# Fail fast: a Lambda should answer 503 within its API timeout, not hang on a dead endpoint.
AWS_CLIENT_OPTIONS = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 3, "mode": "standard"}}
# Health probes answer for the moment: one quick attempt.
PROBE_CLIENT_OPTIONS = {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1, "mode": "standard"}}
# Synchronous invocations of another function (a manual online update): the reply takes as long as the work, within
# API Gateway's 29 s; never retried by the SDK (a retry would run the work twice).
INVOKE_CLIENT_OPTIONS = {"connect_timeout": 2, "read_timeout": 25, "retries": {"max_attempts": 1, "mode": "standard"}}
_CLIENT_OPTIONS = {"default": AWS_CLIENT_OPTIONS, "probe": PROBE_CLIENT_OPTIONS, "invoke": INVOKE_CLIENT_OPTIONS}


@dataclass
class Services:
    settings: Settings

    @cached_property
    def redis(self) -> RedisClient:
        return connect(self.settings)

    @cached_property
    def store(self) -> FeatureStore:
        return FeatureStore(self.redis, self.settings)

    @cached_property
    def registry(self) -> Any:
        from recloop.registry import ModelRegistry

        return ModelRegistry(self.aws_client("s3"), self.settings.bucket_name, self.redis)

    @cached_property
    def champion(self) -> Any:
        from recloop.serving import ChampionProvider

        return ChampionProvider(lambda: self.registry, self.store, self.settings, self.settings.model_check_seconds)

    @cached_property
    def recommender(self) -> Recommender:
        return Recommender(self.store, self.settings, self.champion)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.store, KinesisEventStream(self.aws_client("kinesis"), self.settings.stream_name))

    @cached_property
    def stream_consumer(self) -> Any:
        from recloop.stream import StreamConsumer

        return StreamConsumer(self.store, self.aws_client("s3"), self.settings.bucket_name)

    @cached_property
    def dead_letters(self) -> Any:
        from recloop.stream import DeadLetters

        if not self.settings.dead_letter_queue_url:
            raise ValueError("the stream consumer needs a dead-letter queue (DEAD_LETTER_QUEUE_URL)")
        return DeadLetters(self.aws_client("sqs"), self.settings.dead_letter_queue_url)

    @cached_property
    def online_learner(self) -> Any:
        from recloop.online import OnlineLearner

        return OnlineLearner(self.redis, self.registry, self.settings)

    def aws_client(self, name: str, probe: bool = False) -> Any:
        return _aws_client(name, self.settings.aws_region, "probe" if probe else "default")

    def invoke_client(self) -> Any:
        """A Lambda client for synchronous invocations that last as long as the invoked work (no SDK retries)."""
        return _aws_client("lambda", self.settings.aws_region, "invoke")


@lru_cache(maxsize=16)
def _aws_client(name: str, region: str, mode: str) -> Any:
    # Imported on first use: functions that never call AWS skip boto3's import at cold start.
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL (LocalStack, moto server) is honoured by boto3 itself.
    return boto3.client(name, region_name=region, config=Config(**_CLIENT_OPTIONS[mode]))


@lru_cache(maxsize=1)
def get_services() -> Services:
    return Services(get_settings())


def reset_services() -> None:
    """Forget settings and clients (tests change the environment between cases)."""
    get_services.cache_clear()
    get_settings.cache_clear()
    _aws_client.cache_clear()
