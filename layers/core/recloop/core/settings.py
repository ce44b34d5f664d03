"""Runtime configuration: one pydantic model read from the environment, validated at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class AllocationStrategy(StrEnum):
    THOMPSON_SAMPLING = "thompson_sampling"
    EPSILON_GREEDY = "epsilon_greedy"
    FIXED_SPLIT = "fixed_split"


# What redis-py connects to: TCP, TCP with TLS, a Unix socket.
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


class AuthMode(StrEnum):
    """Whether the API functions check their caller (docs/authentication.md)."""

    TOKEN = "token"  # every protected route needs the principal API Gateway's authorizer vouched for
    NONE = "none"  # no caller checks: only for an emulator on one machine (the template's local profile)


class SettingsError(RuntimeError):
    """A configuration value is missing or invalid; raised at cold start so the function never serves."""


class Settings(BaseModel):
    """Every field is read from the environment variable named by its alias."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # The names and defaults of the reference guide's configuration (docs/architecture.md, "Configuration").
    online_learning_buffer_size: int = Field(1000, alias="ONLINE_LEARNING_BUFFER_SIZE", ge=1, le=1_000_000)
    online_learning_batch_size: int = Field(32, alias="ONLINE_LEARNING_BATCH_SIZE", ge=1, le=100_000)
    online_learning_learning_rate: float = Field(0.001, alias="ONLINE_LEARNING_LEARNING_RATE", gt=0, le=10)
    # An online update's part is kept if its held-out metric got at most this much worse (relative), else rolled back.
    online_learning_tolerance: float = Field(0.0, alias="ONLINE_LEARNING_TOLERANCE", ge=0, le=1)
    # The online update's lock: at least OnlineUpdateFunction's timeout (template.yaml), so no two updates overlap.
    online_learning_lock_seconds: int = Field(300, alias="ONLINE_LEARNING_LOCK_SECONDS", ge=1, le=3600)
    # The ranker's online refit: leaf = decay * old + (1 - decay) * refit (LightGBM's decay_rate).
    online_learning_refit_decay: float = Field(0.9, alias="ONLINE_LEARNING_REFIT_DECAY", ge=0, le=1)
    # Share of ranked recommendations whose features are logged for the refit, and the log's length cap.
    feature_log_sample_rate: float = Field(1.0, alias="FEATURE_LOG_SAMPLE_RATE", ge=0, le=1)
    feature_log_cap: int = Field(5000, alias="FEATURE_LOG_CAP", ge=1, le=1_000_000)
    drift_threshold: float = Field(0.05, alias="DRIFT_THRESHOLD", gt=0, lt=1)
    retrain_interval_hours: float = Field(168, alias="RETRAIN_INTERVAL_HOURS", gt=0)
    min_new_interactions: int = Field(10_000, alias="MIN_NEW_INTERACTIONS", ge=1)
    # Drift and performance start a retrain only once this many interactions arrived since the last one: sooner, it
    # would train on what the last one saw (and refuse its candidate again), with too few unseen events to judge by.
    retrain_min_fresh_interactions: int = Field(200, alias="RETRAIN_MIN_FRESH_INTERACTIONS", ge=0)
    # The performance trigger: the champion's live quality worse than its baseline by this share (relative), once the
    # baseline rests on at least PERFORMANCE_MIN_SAMPLES readings (a young baseline is noise).
    performance_drop_threshold: float = Field(0.2, alias="PERFORMANCE_DROP_THRESHOLD", gt=0, lt=1)
    performance_min_samples: int = Field(5, alias="PERFORMANCE_MIN_SAMPLES", ge=1, le=1_000_000)
    # The live hit rate's current window and its baseline each rest on at least this many judged positive events.
    performance_min_positives: int = Field(200, alias="PERFORMANCE_MIN_POSITIVES", ge=1, le=1_000_000)
    # The retrain state machine (empty: retraining cannot be started here), and how long its lock lives: longer than
    # the longest retrain, so the lock of an execution that died expires and the next one may start.
    retrain_state_machine_arn: str = Field("", alias="RETRAIN_STATE_MACHINE_ARN")
    retrain_lock_seconds: int = Field(6 * 3600, alias="RETRAIN_LOCK_SECONDS", ge=60, le=7 * 86_400)
    # A retrained candidate must beat the champion's holdout HR@10 by this much to be registered.
    retrain_min_improvement: float = Field(0.0, alias="RETRAIN_MIN_IMPROVEMENT", ge=0, le=1)
    # What a registered candidate becomes: a canary experiment against the champion (auto_promote) or, at once,
    # the champion. With no champion yet it is always promoted.
    retrain_deployment: Literal["canary", "promote"] = Field("canary", alias="RETRAIN_DEPLOYMENT")
    canary_traffic_percentage: float = Field(10.0, alias="CANARY_TRAFFIC_PERCENTAGE", gt=0, le=100)
    # Retraining on SageMaker (recloop.learning.sagemaker): the role the training job runs as (empty: not
    # configured), its image (empty: the region's prebuilt scikit-learn image), machine and time limit (keep it
    # below RETRAIN_LOCK_SECONDS), and the prefix of its job names (unique per stack in one account and region).
    sagemaker_role_arn: str = Field("", alias="SAGEMAKER_ROLE_ARN")
    # Datasets larger than this (gzipped JSON lines; about 23 MB per million events) train on SageMaker, where a
    # role is configured: the Lambda branch holds the whole dataset in 3 GB for at most 15 minutes.
    sagemaker_min_dataset_bytes: int = Field(32 * 2**20, alias="SAGEMAKER_MIN_DATASET_BYTES", ge=0)
    sagemaker_training_image: str = Field("", alias="SAGEMAKER_TRAINING_IMAGE")
    sagemaker_instance_type: str = Field("ml.m5.2xlarge", alias="SAGEMAKER_INSTANCE_TYPE", pattern=r"^ml\.[a-z0-9.]+$")
    sagemaker_volume_size_gb: int = Field(30, alias="SAGEMAKER_VOLUME_SIZE_GB", ge=1, le=16_384)
    sagemaker_max_runtime_seconds: int = Field(4 * 3600, alias="SAGEMAKER_MAX_RUNTIME_SECONDS", ge=60, le=28 * 86_400)
    sagemaker_job_name_prefix: str = Field(
        "recloop", alias="SAGEMAKER_JOB_NAME_PREFIX", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$", max_length=40
    )
    default_allocation_strategy: AllocationStrategy = Field(
        AllocationStrategy.THOMPSON_SAMPLING, alias="DEFAULT_ALLOCATION_STRATEGY"
    )
    default_traffic_percentage: float = Field(100.0, alias="DEFAULT_TRAFFIC_PERCENTAGE", ge=0, le=100)

    # Infrastructure.
    redis_url: str = Field("", alias="REDIS_URL")
    redis_cluster: bool = Field(False, alias="REDIS_CLUSTER")
    redis_timeout_seconds: float = Field(1.0, alias="REDIS_TIMEOUT_SECONDS", gt=0, le=30)
    # Secrets Manager secret holding the AUTH token (or an ACL user's name and password); REDIS_URL never carries it.
    redis_auth_secret_arn: str = Field("", alias="REDIS_AUTH_SECRET_ARN")
    # CA bundle for a rediss:// server whose certificate a private CA signed (ElastiCache's is publicly trusted).
    redis_tls_ca_file: str = Field("", alias="REDIS_TLS_CA_FILE")
    bucket_name: str = Field("", alias="BUCKET_NAME")
    stream_name: str = Field("", alias="STREAM_NAME")
    aws_endpoint_url: str = Field("", alias="AWS_ENDPOINT_URL")
    aws_region: str = Field("us-east-1", alias="AWS_REGION")
    # How long an event id is remembered, against client retries, stream redeliveries and replays of failed
    # records: never less than the stream's retention plus a day for a replay after it (`deduplication_seconds`).
    deduplication_window_hours: float = Field(48.0, alias="DEDUPLICATION_WINDOW_HOURS", ge=1, le=24 * 30)
    stream_retention_hours: int = Field(24, alias="STREAM_RETENTION_HOURS", ge=24, le=8760)
    # The online-learning buffer's bound: past it, the oldest buffered events are dropped from online learning
    # (the archive keeps every event for retraining). 0: ten times ONLINE_LEARNING_BUFFER_SIZE.
    online_learning_buffer_limit: int = Field(0, alias="ONLINE_LEARNING_BUFFER_LIMIT", ge=0, le=10_000_000)
    # The stream consumer's dead-letter queue (poison records, with their reason).
    dead_letter_queue_url: str = Field("", alias="DEAD_LETTER_QUEUE_URL")
    # The function the ops routes invoke for a manual online update.
    online_update_function_name: str = Field("", alias="ONLINE_UPDATE_FUNCTION_NAME")

    # Client authentication. The safe default: a function that is not told otherwise refuses unknown callers.
    auth_mode: AuthMode = Field(AuthMode.TOKEN, alias="AUTH_MODE")
    # The secret whose value signs client tokens (the authorizer and `python -m recloop.tools.issue_token`).
    auth_signing_secret_arn: str = Field("", alias="AUTH_SIGNING_SECRET_ARN")

    # Features and recommendations.
    # >= 1 day keeps the decay epoch valid for 900 half-lives (about 2.5 years at the minimum).
    popularity_half_life_hours: float = Field(168.0, alias="POPULARITY_HALF_LIFE_HOURS", ge=24, le=87_600)
    # What users with no history are shown: popularity over a short half-life (rolling generations, so any
    # half-life is safe). 48 h ranked best for such users on the MovieTweetings warm-up half (24 h to 7 days).
    trending_half_life_hours: float = Field(48.0, alias="TRENDING_HALF_LIFE_HOURS", ge=1, le=8_760)
    recent_items_cap: int = Field(50, alias="RECENT_ITEMS_CAP", ge=1, le=1000)
    cooccurrence_window: int = Field(20, alias="COOCCURRENCE_WINDOW", ge=1, le=200)
    cooccurrence_cap: int = Field(200, alias="COOCCURRENCE_CAP", ge=10, le=10_000)
    popularity_prior_weight: float = Field(0.2, alias="POPULARITY_PRIOR_WEIGHT", ge=0)
    # How long a recommend instance reuses what every event moves a little: the top of the popularity and trending
    # rankings, items' popularity and items' co-occurrence neighbours (0: read every request).
    popularity_cache_seconds: float = Field(1.0, alias="POPULARITY_CACHE_SECONDS", ge=0, le=3600)
    attribution_window_seconds: int = Field(86_400, alias="ATTRIBUTION_WINDOW_SECONDS", ge=60, le=30 * 86_400)
    max_recommendations: int = Field(100, alias="MAX_RECOMMENDATIONS", ge=1, le=1000)
    # How often a recommend instance checks the registry's champion pointer (served from Redis).
    model_check_seconds: float = Field(5.0, alias="MODEL_CHECK_SECONDS", ge=0, le=3600)
    # How long the ranker reuses an item's counters and categories read from Redis (0: read every request).
    item_feature_cache_seconds: float = Field(2.0, alias="ITEM_FEATURE_CACHE_SECONDS", ge=0, le=300)

    @model_validator(mode="after")
    def _redis_connection_is_consistent(self) -> Settings:
        # The messages never quote REDIS_URL: it may carry a password.
        url = urlsplit(self.redis_url) if self.redis_url else None
        if url is not None and url.scheme not in REDIS_URL_SCHEMES:
            raise ValueError(f"REDIS_URL must start with {', '.join(f'{s}://' for s in REDIS_URL_SCHEMES)}")
        if url is not None and self.redis_cluster and url.scheme == "unix":
            raise ValueError("REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL")
        if url is not None and self.redis_auth_secret_arn and (url.username or url.password):
            raise ValueError("REDIS_URL must not carry credentials when REDIS_AUTH_SECRET_ARN is set")
        if self.redis_tls_ca_file:
            if url is None or url.scheme != "rediss":
                raise ValueError("REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL")
            if not os.path.isfile(self.redis_tls_ca_file):
                raise ValueError("REDIS_TLS_CA_FILE is not a file")
        return self

    @model_validator(mode="after")
    def _batch_fits_buffer(self) -> Settings:
        if self.online_learning_batch_size > self.online_learning_buffer_size:
            raise ValueError("ONLINE_LEARNING_BATCH_SIZE must not exceed ONLINE_LEARNING_BUFFER_SIZE")
        if self.online_learning_buffer_limit and self.online_learning_buffer_limit < self.online_learning_buffer_size:
            raise ValueError("ONLINE_LEARNING_BUFFER_LIMIT must be at least ONLINE_LEARNING_BUFFER_SIZE")
        return self

    @property
    def deduplication_seconds(self) -> int:
        return int(max(self.deduplication_window_hours, self.stream_retention_hours + 24) * 3600)

    @property
    def buffer_limit(self) -> int:
        return self.online_learning_buffer_limit or 10 * self.online_learning_buffer_size

    @property
    def half_life_seconds(self) -> float:
        return self.popularity_half_life_hours * 3600.0

    @property
    def trending_half_life_seconds(self) -> float:
        return self.trending_half_life_hours * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        names = {field.alias for field in cls.model_fields.values() if field.alias}
        values = {name: env[name] for name in names if env.get(name, "") != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
            )
            # Not chained: pydantic's own text quotes the input, and REDIS_URL may carry a password.
            raise SettingsError(f"invalid RecLoop configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings.from_env()
