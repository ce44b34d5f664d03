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
from recloop.adapters.stream import KinesisEventStream
from recloop.core.settings import Settings, get_settings
from recloop.features.store import FeatureStore
from recloop.ingest.producer import IngestService
from recloop.serving.recommender import Recommender

if TYPE_CHECKING:
    from recloop.ingest.consumer import DeadLetters, StreamConsumer
    from recloop.learning.online.learner import OnlineLearner
    from recloop.registry.model_registry import ModelRegistry
    from recloop.serving.champion import ChampionProvider


@dataclass
class Container:
    settings: Settings

    @cached_property
    def redis(self) -> RedisClient:
        return connect(self.settings)

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
        return Recommender(self.store, self.settings, self.champion)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.store, self.stream)

    @cached_property
    def stream_consumer(self) -> StreamConsumer:
        from recloop.ingest.consumer import StreamConsumer
        from recloop.learning.online.buffer import OnlineBuffer

        return StreamConsumer(self.store, self.objects, OnlineBuffer(self.redis))

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

    def aws_client(self, name: str, probe: bool = False) -> Any:
        return aws_client(name, self.settings.aws_region, "probe" if probe else "default")

    def invoke_client(self) -> Any:
        """A Lambda client for synchronous invocations that last as long as the invoked work (no SDK retries)."""
        return aws_client("lambda", self.settings.aws_region, "invoke")

    def probes(self) -> tuple[ObjectStore, KinesisEventStream]:
        """The bucket and the stream through clients that try once, quickly (health checks)."""
        return (
            ObjectStore(self.aws_client("s3", probe=True), self.settings.bucket_name or "-"),
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
