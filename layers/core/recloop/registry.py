"""The model registry: immutable model versions in S3 and the champion pointer that says which one serves.

S3 layout (DESIGN section 5)::

    models/<version>/<file>          the bundle's files, written first
    models/<version>/metadata.json   written last: a version exists once its metadata.json does
    models/champion.json             the serving version, the one before it, when and why
    models/_history/<time>-<v>.json  one record per champion change (append-only, best effort)

S3 is the durable truth. The champion pointer is also cached in Redis for a few seconds so that every
Lambda can check for a new champion on each request without an S3 round trip.

Writes are conditional so that concurrent writers cannot corrupt the registry: bundle files and
metadata.json are written with ``If-None-Match: *`` (a committed version can never be overwritten,
and two writers of one version id cannot mix their files), and the pointer with ``If-Match`` on the
ETag it was read with (two promotions at once cannot lose the ``previous_version``).
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field, ValidationError

from recloop.models.bundle import METADATA_FILE, CorruptModelError, ModelBundle, ModelKind, ModelMetadata, sha256
from recloop.models.loading import load_model

logger = Logger(child=True)

__all__ = [
    "ChampionPointer",
    "ConcurrentPromotionError",
    "CorruptModelError",
    "InvalidVersionError",
    "ModelNotFoundError",
    "ModelRegistry",
    "NoPreviousVersionError",
    "RegistryError",
    "VersionExistsError",
    "new_version_id",
]

MODELS_PREFIX = "models/"
POINTER_KEY = f"{MODELS_PREFIX}champion.json"
HISTORY_PREFIX = f"{MODELS_PREFIX}_history/"
CHAMPION_CACHE_KEY = "recloop:champion"
_NO_CHAMPION = "none"  # cached when no champion exists, so that "none yet" is also a cheap answer
_POINTER_WRITE_ATTEMPTS = 3

# A version is one path segment under models/; a leading letter or digit keeps it apart from `_history`.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RegistryError(Exception):
    """Base class of the registry's own errors (CorruptModelError, a ValueError, is shared with bundles)."""


class InvalidVersionError(RegistryError, ValueError):
    """A version id that can never name a stored version (bad characters, too long, empty)."""


class ModelNotFoundError(RegistryError, LookupError):
    def __init__(self, version: str) -> None:
        super().__init__(f"model version {version!r} is not registered")
        self.version = version


class VersionExistsError(RegistryError):
    """Versions are immutable: a registered version id is never written again."""

    def __init__(self, version: str, detail: str = "") -> None:
        super().__init__(f"model version {version!r} already exists{': ' + detail if detail else ''}")
        self.version = version


class NoPreviousVersionError(RegistryError):
    """Rollback asked for with no champion, or a champion that has no predecessor."""


class VersionInUseError(RegistryError):
    def __init__(self, version: str) -> None:
        super().__init__(f"version {version!r} is the champion or the version a rollback returns to")
        self.version = version


class ConcurrentPromotionError(RegistryError):
    """The champion kept changing under this promotion (or changed before a rollback could apply)."""


class ChampionPointer(BaseModel):
    version: str
    previous_version: str | None = None
    promoted_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    reason: str = ""


def new_version_id(kind: ModelKind | str, now: datetime | None = None) -> str:
    """A fresh, sortable, collision-resistant version id such as ``mf-20261127T120000Z-ab12cd``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{ModelKind(kind).value}-{stamp}-{secrets.token_hex(3)}"


def check_version_id(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise InvalidVersionError(
            f"{version!r} is not a valid model version: 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return version


def _check_file_name(name: str) -> None:
    segments = name.split("/")
    if name == METADATA_FILE or not all(_FILE_SEGMENT.match(s) and s not in (".", "..") for s in segments):
        raise ValueError(f"{name!r} cannot be stored as a bundle file")


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound")


def _is_precondition_failure(exc: Exception) -> bool:
    # 412 when the condition failed; 409 when S3 saw a concurrent conditional write to the same key.
    return _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _created_at_key(metadata: ModelMetadata) -> tuple[float, str]:
    try:
        created = datetime.fromisoformat(metadata.created_at)
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return created.timestamp(), metadata.version
    except ValueError:
        return 0.0, metadata.version


class ModelRegistry:
    def __init__(
        self, s3_client: Any, bucket: str, redis_client: Any = None, pointer_cache_seconds: float = 5.0
    ) -> None:
        if not bucket:
            raise ValueError("the model registry needs a bucket name (BUCKET_NAME)")
        self.s3 = s3_client
        self.bucket = bucket
        self.redis = redis_client
        self.pointer_cache_seconds = pointer_cache_seconds

    # ---- keys -------------------------------------------------------------------------------------------

    @staticmethod
    def version_prefix(version: str) -> str:
        return f"{MODELS_PREFIX}{check_version_id(version)}/"

    def _key(self, version: str, name: str) -> str:
        return f"{self.version_prefix(version)}{name}"

    # ---- S3 primitives ----------------------------------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def _put_new(self, key: str, data: bytes, content_type: str) -> bool:
        """Write an object only if the key is free; False if it already exists."""
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        except ClientError as exc:
            if _is_precondition_failure(exc):
                return False
            raise
        return True

    # ---- versions ---------------------------------------------------------------------------------------

    def register(self, bundle: ModelBundle) -> ModelMetadata:
        """Store a new version: every file first, metadata.json last (the commit marker).

        A version id is written once. Re-running a register that crashed half way with the same bytes
        completes it; different bytes under an uncommitted version id are refused, like a committed one.
        """
        version = check_version_id(bundle.metadata.version)
        for name in bundle.files:
            _check_file_name(name)
        metadata_key = self._key(version, METADATA_FILE)
        if self._exists(metadata_key):
            raise VersionExistsError(version)
        files = bundle.serialised()
        metadata_bytes = files.pop(METADATA_FILE)
        for name, data in files.items():
            key = self._key(version, name)
            if not self._put_new(key, data, "application/octet-stream"):
                stored = self._get(key)
                if stored is None or sha256(stored[0]) != sha256(data):
                    raise VersionExistsError(version, f"{name} was already written with different content")
        if not self._put_new(metadata_key, metadata_bytes, "application/json"):
            raise VersionExistsError(version)
        logger.info("model registered", extra={"model_version": version, "kind": bundle.metadata.kind.value})
        return bundle.metadata.model_copy(deep=True)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def exists(self, version: str) -> bool:
        return self._exists(self._key(version, METADATA_FILE))

    def _read_metadata(self, version: str) -> tuple[bytes, ModelMetadata]:
        stored = self._get(self._key(version, METADATA_FILE))
        if stored is None:
            raise ModelNotFoundError(version)
        raw = stored[0]
        try:
            metadata = ModelMetadata.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptModelError(f"{version}: metadata.json is unreadable: {exc}") from exc
        if metadata.version != version:
            raise CorruptModelError(f"{version}: metadata.json names version {metadata.version!r}")
        return raw, metadata

    def get(self, version: str) -> ModelMetadata:
        """The metadata of a registered version (ModelNotFoundError if none, CorruptModelError if unreadable)."""
        return self._read_metadata(version)[1]

    def list_versions(self) -> list[ModelMetadata]:
        """Every committed version, newest first; versions still being written (no metadata.json) are left out."""
        versions: list[ModelMetadata] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=MODELS_PREFIX, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                version = common["Prefix"][len(MODELS_PREFIX) :].rstrip("/")
                if not VERSION_PATTERN.match(version):
                    continue  # _history/ and anything not written by this registry
                try:
                    versions.append(self.get(version))
                except ModelNotFoundError:
                    continue  # files written, metadata.json not yet: not a version
                except CorruptModelError as exc:
                    logger.warning("unreadable model version left out of the list", extra={"error": str(exc)})
        versions.sort(key=_created_at_key, reverse=True)
        return versions

    def load(self, version: str) -> ModelBundle:
        """Every file of a version, checked against the checksums in its metadata (CorruptModelError if not)."""
        raw, metadata = self._read_metadata(version)
        files: dict[str, bytes] = {METADATA_FILE: raw}
        for name in metadata.files:
            try:
                _check_file_name(name)
            except ValueError as exc:
                raise CorruptModelError(f"{version}: {exc}") from exc
            stored = self._get(self._key(version, name))
            if stored is None:
                raise CorruptModelError(f"{version}: {name} is missing")
            files[name] = stored[0]
        try:
            return ModelBundle.from_files(files)
        except CorruptModelError as exc:
            raise CorruptModelError(f"{version}: {exc}") from exc

    def delete(self, version: str) -> None:
        """Remove a version that is neither the champion nor the one a rollback would return to.

        metadata.json goes first, so a half-deleted version is simply not a version any more.
        """
        pointer, _ = self._read_pointer()
        if pointer is not None and version in (pointer.version, pointer.previous_version):
            raise VersionInUseError(version)
        metadata = self.get(version)
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(version, METADATA_FILE))
        for name in metadata.files:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(version, name))

    # ---- champion ---------------------------------------------------------------------------------------

    def champion(self, *, use_cache: bool = True) -> ChampionPointer | None:
        """The serving version: from the Redis cache when fresh, else from S3 (which refreshes the cache)."""
        if use_cache:
            cached = self._cached_pointer()
            if cached is False:
                return None
            if cached is not None:
                return cached
        pointer, _ = self._read_pointer()
        self._cache_pointer(pointer)
        return pointer

    def promote(self, version: str, reason: str = "") -> ChampionPointer:
        """Make a version the champion, after loading it exactly as serving would.

        A version that is missing files, fails its checksums, has an unknown format or kind, or whose
        loader fails is refused with CorruptModelError and the champion is left as it was. Promoting the
        current champion changes nothing and returns its pointer (safe to retry).
        """
        return self._promote(version, reason, expected_current=None, check_expected=False)

    def rollback(self, reason: str = "") -> ChampionPointer:
        """Point the champion back at the previous version.

        The new pointer's ``previous_version`` is the version rolled back from, so a second rollback
        undoes the first. The target is loaded and checked like any promotion.
        """
        current, _ = self._read_pointer()
        if current is None:
            raise NoPreviousVersionError("there is no champion to roll back")
        if current.previous_version is None:
            raise NoPreviousVersionError(f"champion {current.version!r} has no previous version to roll back to")
        return self._promote(current.previous_version, reason, expected_current=current.version, check_expected=True)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Champion changes, newest first (best-effort records; the pointer itself is the truth)."""
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=HISTORY_PREFIX):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        records = []
        for key in sorted(keys, reverse=True)[:limit]:
            stored = self._get(key)
            if stored is not None:
                records.append(json.loads(stored[0]))
        return records

    def _promote(
        self, version: str, reason: str, *, expected_current: str | None, check_expected: bool
    ) -> ChampionPointer:
        check_version_id(version)
        bundle = self.load(version)  # ModelNotFoundError / CorruptModelError before any write
        try:
            load_model(bundle)  # exactly what serving will do with it
        except CorruptModelError as exc:
            message = str(exc) if str(exc).startswith(version) else f"{version}: {exc}"
            raise CorruptModelError(message) from exc
        for _ in range(_POINTER_WRITE_ATTEMPTS):
            current, etag = self._read_pointer()
            current_version = current.version if current else None
            if check_expected and current_version != expected_current:
                raise ConcurrentPromotionError(
                    f"the champion changed to {current_version!r} while rolling back from {expected_current!r}"
                )
            if current is not None and current.version == version:
                self._cache_pointer(current)
                return current
            pointer = ChampionPointer(version=version, previous_version=current_version, reason=reason)
            if self._write_pointer(pointer, etag):
                break
        else:
            raise ConcurrentPromotionError(f"the champion kept changing; {version!r} was not promoted")
        logger.info(
            "champion changed",
            extra={"model_version": version, "previous_version": pointer.previous_version, "reason": reason},
        )
        self._record_history(pointer, "rollback" if check_expected else "promote")
        self._cache_pointer(pointer)
        return pointer

    def _read_pointer(self) -> tuple[ChampionPointer | None, str | None]:
        stored = self._get(POINTER_KEY)
        if stored is None:
            return None, None
        raw, etag = stored
        try:
            return ChampionPointer.model_validate_json(raw), etag
        except ValidationError as exc:
            # Serve the fallback rather than fail every request; a promotion overwrites it.
            logger.error("champion pointer is unreadable", extra={"error": str(exc)})
            return None, etag

    def _write_pointer(self, pointer: ChampionPointer, etag: str | None) -> bool:
        """Write the pointer if nobody changed it since it was read (ETag), or created it if it was absent."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=POINTER_KEY,
                Body=pointer.model_dump_json(indent=2).encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if _is_precondition_failure(exc):
                return False
            raise
        return True

    def _record_history(self, pointer: ChampionPointer, action: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        record = {"action": action, **pointer.model_dump()}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{HISTORY_PREFIX}{stamp}-{pointer.version}.json",
                Body=json.dumps(record).encode(),
                ContentType="application/json",
            )
        except Exception as exc:  # the pointer is written; a missing history line must not fail the promotion
            logger.warning("champion history not recorded", extra={"error": repr(exc)})

    # ---- Redis cache of the pointer ---------------------------------------------------------------------

    def _cache_enabled(self) -> bool:
        return self.redis is not None and self.pointer_cache_seconds > 0

    def _cached_pointer(self) -> ChampionPointer | Literal[False] | None:
        """The cached pointer, False when "no champion" is cached, None on a miss (or when Redis is down)."""
        if not self._cache_enabled():
            return None
        try:
            cached = self.redis.get(CHAMPION_CACHE_KEY)
        except (redis.RedisError, OSError) as exc:
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

    def _cache_pointer(self, pointer: ChampionPointer | None) -> None:
        if not self._cache_enabled():
            return
        value = pointer.model_dump_json() if pointer else _NO_CHAMPION
        try:
            self.redis.set(CHAMPION_CACHE_KEY, value, px=max(1, int(self.pointer_cache_seconds * 1000)))
        except (redis.RedisError, OSError) as exc:  # the cache expires on its own within its TTL
            logger.warning("champion cache not updated", extra={"error": repr(exc)})
