"""Experiment definitions, durable in S3, and the running ones cached in Redis for the recommend path.

    experiments/<experiment_id>.json   one experiment: its definition, status, decision and final results
    experiments/serving-slot.json      the experiment that last claimed the right to serve (one serves at a time)

Every change of an experiment is a conditional write on the ETag it was read with (`read`, `replace`), so two
requests that change the same experiment at once cannot both win: the loser reads it again. Starting claims the
serving slot by a conditional write too, so two experiments started at the same instant cannot both serve.

The recommend and event paths ask for the running experiments on every request, so their definitions are cached
in Redis for a few seconds (and parsed once per Lambda instance per cached value). Every save deletes the cache:
a start or a stop reaches every instance at its next request (a read racing the change may cache the state
before it, for one TTL at most).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import REDIS_ERRORS, Keys, RedisClient
from recloop.core.errors import ConflictError, NotFoundError
from recloop.experiments.model import EXPERIMENT_ID_PATTERN, SERVING_STATUSES, Experiment, now_iso

logger = Logger(child=True)

EXPERIMENTS_PREFIX = "experiments/"
SERVING_SLOT_KEY = f"{EXPERIMENTS_PREFIX}serving-slot.json"
# A claim of the slot by an experiment still in draft is a start in progress for this long, then a crashed one.
SLOT_CLAIM_SECONDS = 60.0
_EXPERIMENT_ID = re.compile(EXPERIMENT_ID_PATTERN)
_EXPERIMENT_LIST = TypeAdapter(list[Experiment])


class ExperimentNotFoundError(NotFoundError):
    code = "experiment_not_found"

    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"experiment {experiment_id!r} does not exist", experiment_id=experiment_id)


def experiment_key(experiment_id: str) -> str:
    return f"{EXPERIMENTS_PREFIX}{experiment_id}.json"


class SlotClaim(BaseModel):
    experiment_id: str
    claimed_at: str = Field(default_factory=now_iso)

    def age_seconds(self) -> float:
        return (datetime.now(UTC) - datetime.fromisoformat(self.claimed_at)).total_seconds()


class ExperimentStore:
    def __init__(
        self, objects: ObjectStore, redis_client: RedisClient | None = None, running_cache_seconds: float = 5.0
    ) -> None:
        self.objects = objects
        self.redis = redis_client
        self.running_cache_seconds = running_cache_seconds
        # The last cached value read and its parse: the recommend path reads the same value for seconds.
        self._parsed: tuple[str, list[Experiment]] | None = None

    def create(self, experiment: Experiment) -> Experiment:
        """Store a new experiment; an id already taken is refused (ids are random: a retry of the same body
        creates another experiment)."""
        data = experiment.model_dump_json(indent=2).encode()
        if not self.objects.put_if_absent(experiment_key(experiment.experiment_id), data, "application/json"):
            raise ConflictError(
                f"experiment {experiment.experiment_id!r} already exists", experiment_id=experiment.experiment_id
            )
        self._forget_running()
        return experiment

    def get(self, experiment_id: str) -> Experiment:
        return self.read(experiment_id)[0]

    def read(self, experiment_id: str) -> tuple[Experiment, str]:
        """The experiment and the ETag a change of it must match (`replace`)."""
        # An id that cannot name an experiment is never looked up (it would be a key of the caller's choosing).
        if not _EXPERIMENT_ID.match(experiment_id):
            raise ExperimentNotFoundError(experiment_id)
        stored = self.objects.get(experiment_key(experiment_id))
        if stored is None:
            raise ExperimentNotFoundError(experiment_id)
        return Experiment.model_validate_json(stored[0]), stored[1]

    def replace(self, experiment: Experiment, etag: str) -> bool:
        """Write the changed experiment if it is still as read with `etag`; False if another change came first."""
        data = experiment.model_dump_json(indent=2).encode()
        if not self.objects.put_if_match(experiment_key(experiment.experiment_id), data, etag):
            return False
        self._forget_running()
        return True

    def slot(self) -> tuple[SlotClaim | None, str | None]:
        """The last claim of the serving slot and its ETag (None, None: never claimed)."""
        stored = self.objects.get(SERVING_SLOT_KEY)
        if stored is None:
            return None, None
        try:
            return SlotClaim.model_validate_json(stored[0]), stored[1]
        except ValidationError:  # unreadable: claimable, by a write conditional on this ETag
            return None, stored[1]

    def claim_slot(self, experiment_id: str, etag: str | None) -> bool:
        """Claim the serving slot if its claim is still the one read with `etag` (None: never claimed)."""
        data = SlotClaim(experiment_id=experiment_id).model_dump_json().encode()
        return self.objects.put_if_match(SERVING_SLOT_KEY, data, etag)

    def list(self) -> list[Experiment]:
        """Every experiment, newest first. One that does not parse is logged and left out, not fatal."""
        experiments = []
        for key in self.objects.keys(EXPERIMENTS_PREFIX):
            experiment_id = key[len(EXPERIMENTS_PREFIX) :].removesuffix(".json")
            if not key.endswith(".json") or not _EXPERIMENT_ID.match(experiment_id):
                continue
            stored = self.objects.get(key)
            if stored is None:  # deleted since the listing
                continue
            try:
                experiments.append(Experiment.model_validate_json(stored[0]))
            except ValidationError as exc:
                logger.error("experiment definition is unreadable", extra={"key": key, "error": str(exc)})
        return sorted(experiments, key=lambda e: (e.created_at, e.experiment_id), reverse=True)

    def running(self, *, use_cache: bool = True) -> list[Experiment]:
        """The experiments that serve users (running, or rolling out their winner): from the Redis cache when
        fresh, else from S3 (which refreshes the cache)."""
        if use_cache:
            cached = self._cached_running()
            if cached is not None:
                return cached
        running = [e for e in self.list() if e.status in SERVING_STATUSES]
        self._cache_running(running)
        return running

    # The cache: a Redis failure is a miss, never an error (S3 answers instead).
    @property
    def _cache_enabled(self) -> bool:
        return self.redis is not None and self.running_cache_seconds > 0

    def _cached_running(self) -> list[Experiment] | None:
        if not self._cache_enabled:
            return None
        try:
            raw = self.redis.get(Keys.RUNNING_EXPERIMENTS)
        except REDIS_ERRORS as exc:
            logger.warning("experiment cache unavailable; reading S3", extra={"error": repr(exc)})
            return None
        if raw is None:
            return None
        if isinstance(raw, bytes):
            raw = raw.decode()
        if self._parsed is not None and self._parsed[0] == raw:
            return self._parsed[1]
        try:
            running = _EXPERIMENT_LIST.validate_json(raw)
        except ValidationError:
            return None
        self._parsed = (raw, running)
        return running

    def _cache_running(self, running: list[Experiment]) -> None:
        if not self._cache_enabled:
            return
        raw = _EXPERIMENT_LIST.dump_json(running).decode()
        try:
            self.redis.set(Keys.RUNNING_EXPERIMENTS, raw, px=max(1, int(self.running_cache_seconds * 1000)))
        except REDIS_ERRORS as exc:  # expires on its own within its TTL
            logger.warning("experiment cache not updated", extra={"error": repr(exc)})

    def _forget_running(self) -> None:
        if not self._cache_enabled:
            return
        try:
            self.redis.delete(Keys.RUNNING_EXPERIMENTS)
        except REDIS_ERRORS as exc:  # the other instances see the change when the cache expires
            logger.warning("experiment cache not cleared", extra={"error": repr(exc)})
