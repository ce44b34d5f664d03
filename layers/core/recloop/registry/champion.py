"""The champion pointer: which version serves, the one before it, when and why.

    models/champion.json   the pointer, written with If-Match on the ETag it was read with, so two promotions at
                           once cannot lose the previous_version

S3 is the durable truth. The pointer is also cached in Redis for a few seconds, so that every Lambda can check for
a new champion on each request without an S3 round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field, ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import REDIS_ERRORS, Keys, RedisClient
from recloop.models.bundle import ModelBundle
from recloop.registry.errors import ConcurrentPromotionError, CorruptModelError, NoPreviousVersionError
from recloop.registry.history import ChampionHistory
from recloop.registry.versions import MODELS_PREFIX, check_version_id

logger = Logger(child=True)

POINTER_KEY = f"{MODELS_PREFIX}champion.json"
_NO_CHAMPION = "none"  # cached when no champion exists, so that "none yet" is also a cheap answer
_POINTER_WRITE_ATTEMPTS = 3


class ChampionPointer(BaseModel):
    version: str
    previous_version: str | None = None
    promoted_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    reason: str = ""


class PointerCache:
    """The pointer in Redis for `seconds`; a Redis failure is a cache miss, never an error."""

    def __init__(self, redis_client: RedisClient | None, seconds: float) -> None:
        self.redis = redis_client
        self.seconds = seconds

    @property
    def enabled(self) -> bool:
        return self.redis is not None and self.seconds > 0

    def get(self) -> ChampionPointer | Literal[False] | None:
        """The cached pointer, False when "no champion" is cached, None on a miss (or when Redis is down)."""
        if not self.enabled:
            return None
        try:
            cached = self.redis.get(Keys.CHAMPION_CACHE)
        except REDIS_ERRORS as exc:
            logger.warning("champion cache unavailable; reading S3", extra={"error": repr(exc)})
            return None
        if cached is None:
            return None
        if isinstance(cached, bytes):
            cached = cached.decode()
        if cached == _NO_CHAMPION:
            return False
        try:
            return ChampionPointer.model_validate_json(cached)
        except ValidationError:
            return None

    def put(self, pointer: ChampionPointer | None) -> None:
        if not self.enabled:
            return
        value = pointer.model_dump_json() if pointer else _NO_CHAMPION
        try:
            self.redis.set(Keys.CHAMPION_CACHE, value, px=max(1, int(self.seconds * 1000)))
        except REDIS_ERRORS as exc:  # the cache expires on its own within its TTL
            logger.warning("champion cache not updated", extra={"error": repr(exc)})


class Champion:
    """Reads the pointer and changes it: promotion and rollback, each checked by loading the version as serving
    would (`check_servable`) before the pointer moves."""

    def __init__(
        self,
        objects: ObjectStore,
        check_servable: Callable[[str], ModelBundle],
        cache: PointerCache,
        history: ChampionHistory,
    ) -> None:
        self.objects = objects
        self.check_servable = check_servable
        self.cache = cache
        self.history = history

    def current(self, *, use_cache: bool = True) -> ChampionPointer | None:
        """The serving version: from the Redis cache when fresh, else from S3 (which refreshes the cache)."""
        if use_cache:
            cached = self.cache.get()
            if cached is False:
                return None
            if cached is not None:
                return cached
        pointer, _ = self.read()
        self.cache.put(pointer)
        return pointer

    def read(self) -> tuple[ChampionPointer | None, str | None]:
        """The pointer as stored and its ETag."""
        stored = self.objects.get(POINTER_KEY)
        if stored is None:
            return None, None
        raw, etag = stored
        try:
            return ChampionPointer.model_validate_json(raw), etag
        except ValidationError as exc:
            # Serve the fallback rather than fail every request; a promotion overwrites it.
            logger.error("champion pointer is unreadable", extra={"error": str(exc)})
            return None, etag

    def promote(self, version: str, reason: str = "", *, expected_current: str | None = None) -> ChampionPointer:
        """Make a version the champion, after loading it exactly as serving would.

        A version that is missing files, fails its checksums, has an unknown format or kind, or whose
        loader fails is refused with CorruptModelError and the champion is left as it was. Promoting the
        current champion changes nothing and returns its pointer (safe to retry). With `expected_current`,
        the promotion is a compare-and-swap: ConcurrentPromotionError, and nothing changes, unless that version
        is still the champion when the pointer is written (what an automatic change based on the champion it
        read must use, so that it never overrides an operator's promotion or rollback made meanwhile).
        """
        return self._move(
            version, reason, expected_current=expected_current, check_expected=expected_current is not None
        )

    def rollback(self, reason: str = "") -> ChampionPointer:
        """Point the champion back at the previous version.

        The new pointer's ``previous_version`` is the version rolled back from, so a second rollback
        undoes the first. The target is loaded and checked like any promotion.
        """
        current, _ = self.read()
        if current is None:
            raise NoPreviousVersionError("there is no champion to roll back")
        if current.previous_version is None:
            raise NoPreviousVersionError(f"champion {current.version!r} has no previous version to roll back to")
        return self._move(
            current.previous_version, reason, expected_current=current.version, check_expected=True, action="rollback"
        )

    def _move(
        self,
        version: str,
        reason: str,
        *,
        expected_current: str | None,
        check_expected: bool,
        action: str = "promote",
    ) -> ChampionPointer:
        check_version_id(version)
        try:
            self.check_servable(version)  # ModelNotFoundError / CorruptModelError before any write
        except CorruptModelError as exc:
            message = str(exc) if str(exc).startswith(version) else f"{version}: {exc}"
            raise CorruptModelError(message, version=version) from exc
        for _ in range(_POINTER_WRITE_ATTEMPTS):
            current, etag = self.read()
            current_version = current.version if current else None
            if check_expected and current_version != expected_current:
                raise ConcurrentPromotionError(
                    f"the champion changed from {expected_current!r} to {current_version!r}; "
                    f"{version!r} was not made champion",
                    version=version,
                )
            if current is not None and current.version == version:
                self.cache.put(current)
                return current
            pointer = ChampionPointer(version=version, previous_version=current_version, reason=reason)
            if self.objects.put_if_match(POINTER_KEY, pointer.model_dump_json(indent=2).encode(), etag):
                break
        else:
            raise ConcurrentPromotionError(f"the champion kept changing; {version!r} was not promoted")
        logger.info(
            "champion changed",
            extra={"model_version": version, "previous_version": pointer.previous_version, "reason": reason},
        )
        self.history.record(pointer.model_dump(), action)
        self.cache.put(pointer)
        return pointer
